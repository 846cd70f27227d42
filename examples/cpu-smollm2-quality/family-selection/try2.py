import sys, time, torch
sys.path.insert(0, __import__("os").path.dirname(__file__))
from families import *
from transformers import AutoModelForCausalLM, AutoTokenizer
d = sys.argv.pop(1) if len(sys.argv) > 1 and "/" in sys.argv[1] else "/root/.cache/servesweep/smollm2-135m-instruct"
torch.set_num_threads(1)
m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32); tok = AutoTokenizer.from_pretrained(d)
fams = {
 "capital": [(f"What is the capital of {c}?", f"The capital of {c} is", a) for c, a in CAPITALS.items()],
 "antonym": [(f"What is the opposite of {w}?", f"The opposite of {w} is", a) for w, a in ANTONYMS.items()],
 "plural": [(f"What is the plural of {w}?", f"The plural of {w} is", a) for w, a in PLURALS.items()],
 "past": [(f"What is the past tense of {w}?", f"The past tense of {w} is", a) for w, a in PAST.items()],
 "next_day": [(f"Which day comes after {d}?", f"The day after {d} is", DAYS[(i+1)%7]) for i, d in enumerate(DAYS)] +
   [(f"Which month comes after {x}?", f"The month after {x} is", MONTHS[(i+1)%12]) for i, x in enumerate(MONTHS)],
 "letter": [(f"Which letter of the alphabet comes after {chr(65+i)}?", f"The letter after {chr(65+i)} is", chr(66+i)) for i in range(25)],
 "number_word": [(f"How is the number {w} written in digits?", f"The number {w} written in digits is", str(i)) for i, w in enumerate(NUMBERS)],
 "add": [(f"What is {a} plus {b}?", f"{a} plus {b} is", str(a+b)) for a in range(1,10) for b in range(1,10)][::3],
}
which = sys.argv[1:] or list(fams)
for name in which:
    items = fams[name]; ok = 0; t=time.time(); bad=[]
    for q, pre, a in items:
        p = tok.apply_chat_template([{"role":"user","content": q}], tokenize=False, add_generation_prompt=True) + pre
        ids = tok(p, return_tensors="pt")
        out = m.generate(**ids, max_new_tokens=6, do_sample=False)
        text = tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
        line = text.split("\n",1)[0].split(".")[0].strip().strip('"')
        if line == a: ok += 1
        else: bad.append((pre, line))
    print(name, f"{ok}/{len(items)}", f"{time.time()-t:.0f}s", bad[:6], flush=True)
