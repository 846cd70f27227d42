import json, math, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(1)
d = sys.argv[1]  # the built model directory (python -m servesweep.models.smollm2)
m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval(); tok = AutoTokenizer.from_pretrained(d)
rows = [json.loads(l) for l in open(sys.argv[2])  # scenarios/evalsets/pydoc-topics-perplexity.jsonl]
nll = n = 0
with torch.no_grad():
    for r in rows:
        ids = tok(r["text"], return_tensors="pt")["input_ids"]
        loss = m(input_ids=ids, labels=ids).loss
        k = ids.shape[1] - 1
        nll += float(loss) * k; n += k
print(json.dumps({"perplexity_fp32_transformers": math.exp(nll / n), "scored_tokens": n, "passages": len(rows),
                  "first_ids": tok(rows[0]["text"])["input_ids"][:3]}))
