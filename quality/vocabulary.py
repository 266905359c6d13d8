"""Fashion-MNIST words, split so that evaluation never tests what fine-tuning saw.

Three disjoint word sets per class and three disjoint sets of sentence frames:

- `TRAIN_NOUNS`: the words fine-tuning pairs with the photos ("ankle boot", "boots", ...). Queries
  may use them (a shopper types the class noun), indexed catalog text never carries them as the
  true class (only as the *wrong* category of a mislabelled listing).
- `HELDOUT_SYNONYMS`: words for the same classes that fine-tuning never sees ("chelsea", "parka").
  The evaluation catalog's titles use them, so a title names its class only in words the model
  was not taught: the title channel and BM25 get no free label.
- `TRAIN_FRAMES` (fine-tuning), `VAL_FRAMES` and `TEST_FRAMES` (queries of the two evaluation
  splits): sentence frames with one `{c}` slot, pairwise disjoint (tests check it).
- `COMPOSE_FRAMES_*`: modifiers of composed queries ("... but as {c}") that name the *target* class,
  never the class of the query photo.
"""
from __future__ import annotations

CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

TRAIN_NOUNS: dict[str, list[str]] = {
    "T-shirt/top": ["t-shirt", "tee", "top", "tshirt"],
    "Trouser": ["trousers", "pants", "trouser", "jeans"],
    "Pullover": ["pullover", "sweater", "jumper"],
    "Dress": ["dress", "gown", "frock"],
    "Coat": ["coat", "jacket", "overcoat"],
    "Sandal": ["sandal", "sandals"],
    "Shirt": ["shirt", "button-up shirt", "blouse"],
    "Sneaker": ["sneaker", "sneakers", "trainers", "running shoes"],
    "Bag": ["bag", "handbag", "purse", "tote bag"],
    "Ankle boot": ["ankle boot", "ankle boots", "boots", "boot"],
}
HELDOUT_SYNONYMS: dict[str, list[str]] = {
    "T-shirt/top": ["crewneck", "singlet", "camisole", "tank"],
    "Trouser": ["slacks", "chinos", "joggers", "leggings"],
    "Pullover": ["knitwear", "cardigan", "hoodie", "turtleneck"],
    "Dress": ["pinafore", "maxi", "kaftan", "sheath"],
    "Coat": ["parka", "anorak", "trench", "puffer"],
    "Sandal": ["flip-flops", "slides", "espadrilles", "mules"],
    "Shirt": ["oxford", "flannel", "henley", "tunic"],
    "Sneaker": ["kicks", "plimsolls", "daps", "creepers"],
    "Bag": ["clutch", "satchel", "backpack", "crossbody"],
    "Ankle boot": ["chelsea", "chukkas", "booties", "winklepickers"],
}
TRAIN_FRAMES = [
    "{c}", "a photo of a {c}", "a {c}", "a {c} product photo", "photo of {c}", "a picture of a {c}",
    "product image: {c}", "a black and white photo of a {c}", "{c} for sale", "a close-up photo of the {c}",
]
VAL_FRAMES = [
    "looking for a {c}", "i want to buy a {c}", "show me {c}", "any {c} in stock?", "cheap {c}",
    "best {c} this season", "{c} please", "find a {c} for me", "new {c} arrivals", "where can i get a {c}",
    "recommend a {c}", "{c} on sale now",
]
TEST_FRAMES = [
    "i am searching for a {c}", "need a new {c}", "do you sell {c}?", "{c} under 50 euros", "a nice {c} as a gift",
    "shopping for {c}", "my favourite kind of {c}", "something like a {c}", "good quality {c}", "{c} that looks great",
    "what {c} do you have", "get me a {c}", "a comfortable {c}", "{c} for everyday wear", "searching {c} online",
]
COMPOSE_FRAMES_VAL = ["but as a {c}", "same look as a {c}", "turn it into a {c}", "as {c} instead"]
COMPOSE_FRAMES_TEST = ["the same style but a {c}", "like this, only as a {c}", "make it a {c}", "in the form of a {c}",
                       "changed to a {c}"]


def train_texts(category: str) -> list[str]:
    """Every train frame x train noun of one class: the text side of a fine-tuning pair."""
    return [frame.format(c=noun) for noun in TRAIN_NOUNS[category] for frame in TRAIN_FRAMES]
