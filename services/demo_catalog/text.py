"""Titles and descriptions: per-topic film vocabularies (the text carries the topic), generic product and track text."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_FILM_VOCAB: dict[str, dict[str, list[str]]] = {
    "space_scifi": {
        "hero": ["astronaut", "starship captain", "rogue pilot", "android engineer",
                 "stranded cosmonaut", "young star navigator"],
        "place": ["a distant space station", "the rings of Saturn", "a derelict starship",
                  "a frozen alien moon", "the edge of the galaxy", "an orbital colony on Mars"],
        "threat": ["an alien armada", "a failing fusion reactor", "a rogue artificial intelligence",
                   "a collapsing wormhole", "a storm of meteors"],
        "goal": ["reach the wormhole before the oxygen runs out", "warn Earth of an alien invasion",
                 "repair the hyperdrive", "decode a signal from deep space",
                 "pilot the spaceship home"],
        "theme": ["interstellar travel", "first contact with aliens", "zero gravity",
                  "time dilation", "lost civilizations among the stars", "spaceships and lasers"],
        "mood": ["awe-inspiring", "cerebral", "epic", "futuristic"],
        "genre": ["space opera", "sci-fi adventure", "science fiction thriller"],
        "title_a": ["Dark", "Silent", "Distant", "Infinite", "Stellar", "Cosmic"],
        "title_n": ["Orbit", "Nebula", "Starfall", "Eclipse", "Void", "Comet", "Galaxy", "Asteroid"],
    },
    "romantic_comedy": {
        "hero": ["hopeless romantic", "wedding planner", "clumsy barista", "charming florist",
                 "jilted bride", "lovesick bookseller"],
        "place": ["a sunny cafe in Paris", "a small-town bakery", "a chaotic wedding weekend",
                  "a cramped New York apartment", "a seaside hotel in Italy"],
        "threat": ["a disastrous first date", "a fake engagement", "an awkward love triangle",
                   "a meddling ex-boyfriend", "a mix-up of love letters"],
        "goal": ["win back a first love", "pretend to be a couple for a week",
                 "find true love before the wedding", "confess a secret crush",
                 "stop the wedding of the girl next door"],
        "theme": ["love", "flirting", "second chances at romance", "awkward kisses",
                  "heartbreak and laughter", "dating disasters"],
        "mood": ["charming", "witty", "heartwarming", "feel-good", "sweet"],
        "genre": ["romantic comedy", "rom-com", "love story"],
        "title_a": ["Sweet", "Accidental", "Perfect", "Lovesick", "Sunny", "Sugar"],
        "title_n": ["Kiss", "Valentine", "Sweetheart", "Proposal", "Honeymoon", "Crush", "Romance"],
    },
    "horror": {
        "hero": ["terrified babysitter", "skeptical priest", "grieving widow",
                 "group of frightened teenagers", "paranormal investigator"],
        "place": ["a haunted farmhouse", "an abandoned asylum", "a fog-covered cemetery",
                  "a cabin deep in the dark woods", "a cursed village"],
        "threat": ["a vengeful ghost", "a demonic presence", "a masked killer",
                   "something lurking in the basement", "a possessed doll", "a hungry zombie horde"],
        "goal": ["survive the night", "break an ancient curse", "escape the evil before midnight",
                 "exorcise the demon", "stay alive until dawn"],
        "theme": ["blood", "screams in the dark", "nightmares", "creeping dread", "the undead",
                  "ghosts and demons"],
        "mood": ["terrifying", "creepy", "gruesome", "bone-chilling", "scary"],
        "genre": ["horror film", "supernatural horror", "slasher", "ghost story"],
        "title_a": ["Haunted", "Cursed", "Bloody", "Wicked", "Dead", "Hollow"],
        "title_n": ["Nightmare", "Curse", "Crypt", "Possession", "Grave", "Scream", "Demon"],
    },
    "detective_mystery": {
        "hero": ["hard-boiled detective", "retired police inspector", "amateur sleuth",
                 "forensic expert", "private investigator"],
        "place": ["a rain-soaked city", "a sleepy English village", "a luxury night train",
                  "a locked manor house", "the foggy docks of London"],
        "threat": ["a string of unsolved murders", "a missing heiress", "a poisoned millionaire",
                   "a stolen diamond", "a cunning killer who leaves riddles"],
        "goal": ["unmask the murderer", "follow the clues to the killer",
                 "solve the case before the killer strikes again", "crack a perfect alibi",
                 "find out who committed the crime"],
        "theme": ["suspects and clues", "alibis", "whodunit twists", "police interrogations",
                  "murder and deception", "a detective's deductions"],
        "mood": ["suspenseful", "twisty", "intricate", "noir", "clever"],
        "genre": ["murder mystery", "detective story", "crime thriller", "whodunit"],
        "title_a": ["Hidden", "Final", "Missing", "Secret", "Crimson", "Deadly"],
        "title_n": ["Clue", "Alibi", "Witness", "Case", "Suspect", "Verdict", "Motive", "Murder"],
    },
    "nature_documentary": {
        "hero": ["wildlife photographer", "marine biologist", "family of elephants",
                 "pride of lions", "pod of migrating whales", "veteran naturalist"],
        "place": ["the African savanna", "the Amazon rainforest", "a coral reef",
                  "the Arctic tundra", "the Himalayan mountains", "the deep ocean"],
        "threat": ["climate change", "a long drought", "melting sea ice", "habitat loss",
                   "hungry predators"],
        "goal": ["follow the great migration", "document rare species",
                 "reveal the hidden life of insects", "track snow leopards through winter",
                 "film animals in their natural habitat"],
        "theme": ["wildlife", "fragile ecosystems", "animal behaviour", "the changing seasons",
                  "conservation", "birds, insects and mammals"],
        "mood": ["breathtaking", "stunning", "educational", "majestic", "beautifully filmed"],
        "genre": ["nature documentary", "wildlife documentary", "documentary series"],
        "title_a": ["Frozen", "Living", "Untamed", "Blue", "Green", "Ancient"],
        "title_n": ["Planet", "Wilderness", "Ocean", "Savanna", "Rainforest", "Earth", "Tundra"],
    },
    "western": {
        "hero": ["lone gunslinger", "weary sheriff", "outlaw cowboy", "bounty hunter",
                 "frontier rancher", "stagecoach driver"],
        "place": ["a dusty frontier town", "the Texas badlands", "a desert canyon",
                  "a lawless mining camp", "the open prairie"],
        "threat": ["a ruthless gang of outlaws", "cattle rustlers", "a corrupt railroad baron",
                   "a deadly showdown at noon", "bandits on horseback"],
        "goal": ["bring the outlaw to justice", "defend the ranch", "ride across the desert",
                 "collect the bounty", "win the duel at high noon"],
        "theme": ["revolvers and saloons", "horses", "cattle drives", "frontier justice",
                  "cowboys and sheriffs", "gunfights"],
        "mood": ["gritty", "rugged", "dusty", "hard-riding"],
        "genre": ["western", "cowboy western", "frontier tale"],
        "title_a": ["Dusty", "Lonesome", "Wild", "Golden", "Iron", "Dead Man's"],
        "title_n": ["Gulch", "Saddle", "Frontier", "Canyon", "Outlaw", "Spur", "Rider", "Mesa"],
    },
    "animated_family": {
        "hero": ["talking rabbit", "curious little robot", "brave young princess",
                 "friendly dragon", "lost puppy", "mischievous toy"],
        "place": ["a magical kingdom", "an enchanted forest", "a toy shop at night",
                  "a candy-colored island", "a village of talking animals"],
        "threat": ["a grumpy wizard", "a silly villain", "a storm that scatters the toys",
                   "a mischievous witch", "a cranky troll"],
        "goal": ["find the way home", "save the magical kingdom", "learn the value of friendship",
                 "rescue their family", "make a wish come true"],
        "theme": ["friendship", "magic", "songs", "adventure for kids", "family fun",
                  "cartoon animals"],
        "mood": ["colorful", "delightful", "funny", "whimsical", "cute"],
        "genre": ["animated adventure", "family cartoon", "animated musical"],
        "title_a": ["Little", "Magic", "Tiny", "Happy", "Sparkly", "Jolly"],
        "title_n": ["Dragon", "Bunny", "Toyland", "Wish", "Puppy", "Fairy", "Unicorn"],
    },
    "war_drama": {
        "hero": ["young soldier", "battle-weary sergeant", "field nurse", "fighter pilot",
                 "resistance fighter", "platoon commander"],
        "place": ["the trenches of the Somme", "the beaches of Normandy", "a besieged city",
                  "the jungles of Vietnam", "an occupied village", "the front line"],
        "threat": ["enemy artillery", "a brutal siege", "an ambush behind enemy lines",
                   "the horrors of combat", "a desperate retreat"],
        "goal": ["hold the bridge", "rescue a captured comrade", "survive the invasion",
                 "bring the platoon home alive", "break through the enemy lines"],
        "theme": ["sacrifice", "courage under fire", "brotherhood in arms", "the cost of war",
                  "battlefield heroism", "soldiers and generals"],
        "mood": ["harrowing", "powerful", "sombre", "moving"],
        "genre": ["war drama", "war epic", "historical war film"],
        "title_a": ["Fallen", "Brave", "Burning", "Last", "Bloodied", "Valiant"],
        "title_n": ["Battalion", "Trenches", "Siege", "Front", "Battle", "Regiment", "Valor"],
    },
}

# Sentence templates are shared by all topics: only the slot words differ.
_FILM_LEADS: tuple[str, ...] = (
    "{A_mood} {mood} {genre} about {a_hero} in {place}.",
    "In {place}, {a_hero} must {goal}.",
    "When {threat} strikes {place}, {a_hero} sets out to {goal}.",
    "This {mood} {genre} follows {a_hero} who faces {threat}.",
    "Set in {place}, the story follows {a_hero} determined to {goal}.",
    "{A_hero} confronts {threat} and tries to {goal}.",
    "{A_hero}, {threat} and {place}: {a_mood} {mood} {genre}.",
)
_FILM_MORE: tuple[str, ...] = (
    "A {mood} tale of {theme} and {theme2}.",
    "Expect {theme}, {theme2} and {threat}.",
    "Critics called it {mood} and {mood2}.",
    "Fans of the {genre} will love its {theme}.",
    "Everything changes with {threat}.",
    "The {hero} has to {goal}.",
    "Full of {theme}.",
)
_FILM_GENERIC: tuple[str, ...] = (
    "Runs {mins} minutes.",
    "Featuring an ensemble cast.",
    "Newly restored in high definition.",
    "Available with subtitles in twelve languages.",
    "Directed by {person}.",
    "Released in {year}.",
)
_ROMAN = ("II", "III", "IV")

FILM_TOPICS: tuple[str, ...] = tuple(f"film:{name}" for name in _FILM_VOCAB)

# --------------------------------------------------------------------------- products

_BRANDS: tuple[str, ...] = (
    "Norvik", "Altmo", "Brekka", "Calder", "Dovetail", "Elmsworth", "Fenwick", "Garrow",
    "Halden", "Iselin", "Juno", "Kestrel", "Lumio", "Nordell", "Orrin", "Pellam",
    "Quillon", "Rowan", "Solvik", "Tamsin", "Ulven", "Varda", "Wexford", "Zelle",
)
_PRODUCT_SENTENCES: tuple[str, ...] = (
    "A sturdy item from {brand}.",
    "Reliable everyday design by {brand}.",
    "Model {model}, made to last.",
    "A customer favourite from the {brand} range.",
    "Ships in recycled packaging.",
    "Covered by a two-year warranty.",
    "Part of the {year} collection.",
    "Designed in-house by {brand}.",
)

# --------------------------------------------------------------------------- tracks

_FIRST_NAMES: tuple[str, ...] = (
    "Ama", "Bo", "Cira", "Dax", "Eli", "Fen", "Gia", "Hal", "Ines", "Jun", "Kai", "Lea",
    "Milo", "Nia", "Oto", "Pia", "Remy", "Sol", "Tove", "Uma", "Vik", "Wren", "Yara", "Zed",
)
_LAST_NAMES: tuple[str, ...] = (
    "Lorne", "Marsh", "Okafor", "Quint", "Reyes", "Sato", "Tarn", "Vale", "Wilde", "Arden",
    "Brook", "Castell", "Dane", "Ebner", "Fox", "Greer",
)
_TRACK_SENTENCES: tuple[str, ...] = (
    "Recorded in {year}.",
    "From the album Volume {vol}.",
    "Released independently.",
    "Remastered edition.",
    "Licensed for streaming.",
)




def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _person(rng: np.random.Generator) -> str:
    return f"{_pick(rng, _FIRST_NAMES)} {_pick(rng, _LAST_NAMES)}"


def film_text(topic: str, rng: np.random.Generator) -> tuple[str, str]:
    """Title and 1-3 sentence description of a film of ``topic`` (a key of the vocabulary)."""
    v = _FILM_VOCAB[topic]
    theme, theme2 = rng.choice(v["theme"], size=2, replace=False)
    mood, mood2 = rng.choice(v["mood"], size=2, replace=False)
    hero, threat = _pick(rng, v["hero"]), _pick(rng, v["threat"])
    slots = {
        "hero": hero,
        "a_hero": f"{_article(hero)} {hero}",
        "A_hero": f"{_article(hero).capitalize()} {hero}",
        "place": _pick(rng, v["place"]),
        "threat": threat,
        "goal": _pick(rng, v["goal"]),
        "theme": str(theme),
        "theme2": str(theme2),
        "mood": str(mood),
        "mood2": str(mood2),
        "a_mood": _article(str(mood)),
        "A_mood": _article(str(mood)).capitalize(),
        "genre": _pick(rng, v["genre"]),
        "mins": str(int(rng.integers(80, 170))),
        "person": _person(rng),
        "year": str(int(rng.integers(1950, 2024))),
    }
    n_sentences = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.30]))
    sentences = [_pick(rng, _FILM_LEADS).format(**slots)]
    extra = rng.permutation(len(_FILM_MORE))
    for k in range(n_sentences - 1):
        pool = _FILM_GENERIC if rng.random() < 0.25 else _FILM_MORE
        template = pool[int(extra[k])] if pool is _FILM_MORE else _pick(rng, pool)
        sentences.append(template.format(**slots))
    description = " ".join(s[:1].upper() + s[1:] for s in sentences)

    a, n = _pick(rng, v["title_a"]), _pick(rng, v["title_n"])
    n2 = _pick(rng, [w for w in v["title_n"] if w != n])
    style = int(rng.integers(5))
    if style == 0:
        title = f"The {a} {n}"
    elif style == 1:
        title = f"{a} {n}"
    elif style == 2:
        title = f"{n} of the {a} {n2}"
    elif style == 3:
        title = f"{a} {n}: {n2}"
    else:
        title = f"{n} {_pick(rng, _ROMAN)}" if rng.random() < 0.5 else f"The {n}"
    return title, description


def product_text(rng: np.random.Generator) -> tuple[str, str, str]:
    """Generic, topic-free (title, description, model) of a product."""
    brand = _pick(rng, _BRANDS)
    model = f"{chr(ord('A') + int(rng.integers(26)))}-{int(rng.integers(100, 1000))}"
    slots = {"brand": brand, "model": model, "year": str(int(rng.integers(2015, 2024)))}
    n_sentences = int(rng.integers(1, 3))
    idx = rng.choice(len(_PRODUCT_SENTENCES), size=n_sentences, replace=False)
    description = " ".join(_PRODUCT_SENTENCES[int(i)].format(**slots) for i in idx)
    return f"{brand} {model}", description, model


def track_text(rng: np.random.Generator) -> tuple[str, str]:
    """Generic, topic-free (title, description) of a music track."""
    number = f"{int(rng.integers(1, 10_000)):04d}"
    artist = _person(rng)
    description = f"Track {number} by {artist}."
    if rng.random() < 0.6:
        slots = {"year": str(int(rng.integers(1990, 2024))), "vol": str(int(rng.integers(1, 9)))}
        description += " " + _pick(rng, _TRACK_SENTENCES).format(**slots)
    return f"Track {number}", description
