CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo",
 "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Greece": "Athens", "Portugal": "Lisbon",
 "Austria": "Vienna", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
 "Denmark": "Copenhagen", "Poland": "Warsaw", "Hungary": "Budapest", "Belgium": "Brussels", "the Netherlands": "Amsterdam",
 "Canada": "Ottawa", "Mexico": "Mexico City", "Argentina": "Buenos Aires", "Peru": "Lima", "Chile": "Santiago",
 "Kenya": "Nairobi", "Thailand": "Bangkok", "South Korea": "Seoul", "India": "New Delhi", "Turkey": "Ankara",
 "Iran": "Tehran", "Iraq": "Baghdad", "Cuba": "Havana", "Australia": "Canberra", "the United Kingdom": "London",
 "the United States": "Washington, D.C.", "Switzerland": "Bern", "Czechia": "Prague", "Vietnam": "Hanoi", "Indonesia": "Jakarta"}
ANTONYMS = {"hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad", "old": "young", "day": "night",
 "black": "white", "open": "closed", "light": "dark", "hard": "soft", "high": "low", "early": "late", "rich": "poor",
 "strong": "weak", "wet": "dry", "full": "empty", "good": "bad", "long": "short", "in": "out", "left": "right",
 "thick": "thin", "loud": "quiet", "win": "lose", "push": "pull", "buy": "sell", "first": "last", "true": "false",
 "yes": "no", "top": "bottom", "love": "hate", "clean": "dirty", "heavy": "light", "near": "far", "inside": "outside",
 "before": "after", "north": "south", "east": "west", "cheap": "expensive", "alive": "dead"}
PLURALS = {"cat": "cats", "dog": "dogs", "box": "boxes", "child": "children", "mouse": "mice", "man": "men",
 "woman": "women", "foot": "feet", "tooth": "teeth", "city": "cities", "baby": "babies", "knife": "knives",
 "leaf": "leaves", "bus": "buses", "church": "churches", "apple": "apples", "house": "houses", "car": "cars",
 "book": "books", "person": "people", "goose": "geese", "wolf": "wolves", "story": "stories", "dish": "dishes",
 "horse": "horses", "tree": "trees", "bird": "birds", "party": "parties", "glass": "glasses", "key": "keys",
 "toy": "toys", "hero": "heroes", "potato": "potatoes", "wife": "wives", "fox": "foxes", "ox": "oxen",
 "sheep": "sheep", "fish": "fish", "day": "days", "star": "stars"}
PAST = {"go": "went", "eat": "ate", "walk": "walked", "see": "saw", "run": "ran", "take": "took", "give": "gave",
 "come": "came", "write": "wrote", "speak": "spoke", "drink": "drank", "swim": "swam", "sing": "sang", "buy": "bought",
 "think": "thought", "bring": "brought", "teach": "taught", "catch": "caught", "play": "played", "jump": "jumped",
 "make": "made", "say": "said", "find": "found", "know": "knew", "fly": "flew", "sleep": "slept", "feel": "felt",
 "leave": "left", "meet": "met", "sit": "sat", "stand": "stood", "begin": "began", "break": "broke", "choose": "chose",
 "drive": "drove", "fall": "fell", "forget": "forgot", "grow": "grew", "hold": "held", "tell": "told"}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
 "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]

def families():
    f = {}
    f["capital"] = [(f"What is the capital of {c}?", a) for c, a in CAPITALS.items()]
    f["antonym"] = [(f"What is the opposite of \"{w}\"?", a) for w, a in ANTONYMS.items()]
    f["plural"] = [(f"What is the plural of \"{w}\"?", a) for w, a in PLURALS.items()]
    f["past"] = [(f"What is the past tense of \"{w}\"?", a) for w, a in PAST.items()]
    f["next_day"] = [(f"Which day comes after {d}?", DAYS[(i + 1) % 7]) for i, d in enumerate(DAYS)] + \
        [(f"Which month comes after {m}?", MONTHS[(i + 1) % 12]) for i, m in enumerate(MONTHS)]
    f["letter"] = [(f"Which letter comes after {chr(65+i)}?", chr(66+i)) for i in range(25)]
    f["number_word"] = [(f"Write the number {w} in digits.", str(i)) for i, w in enumerate(NUMBERS)]
    f["add"] = [(f"What is {a} + {b}?", str(a + b)) for a in range(1, 10) for b in range(1, 10)][::2]
    return f
