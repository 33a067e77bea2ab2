"""Word lists and templates for the synthetic training data (see `data.py`).

Nothing here contains a digit: numbers in the generated text come only from the slots that `data.py` fills, so a
planted numeric value can never hide inside a fixed phrase. Every template string is unique across all the lists
below, which keeps the train/heldout partition of phrasings disjoint even across roles (a tested property).
Placeholders: `{attr}` an attribute phrase, `{value}` a value, `{key}` a recall key; distractor slots are listed in
`data._SLOT_DRAWS`.
"""

from __future__ import annotations

# value kinds: how an attribute's value is drawn (see data.draw_value)
VALUE_KINDS = ("code", "alnum", "word", "name", "city", "date", "number", "dish", "colour", "title")

# attributes stated as "my {attr}"; grouped by the kind of value they take
BASE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "code": (
        "locker code", "locker number", "gym locker combination", "PIN", "bank PIN", "door code", "alarm code",
        "garage door code", "safe combination", "bike lock combination", "phone extension", "employee number",
        "student ID number", "membership number", "room number", "apartment number", "house number",
        "parking space number", "office number", "desk number", "badge number", "storage unit number",
        "mailbox number", "suitcase lock code", "voicemail PIN", "building entry code", "padlock combination",
        "library card PIN", "hotel room number", "ticket number", "order number", "customer number", "gate code",
        "shed lock code", "postbox number", "seat number", "platform number", "bus route number",
        "pharmacy pickup code", "dry cleaning ticket number", "coat check number", "raffle ticket number",
        "pager code", "intercom code", "keypad code", "cabin number", "pew number", "allotment plot number",
        "laundry card PIN", "pool locker code", "staff code", "carpool group number", "jury number",
        "museum locker code", "ferry cabin number", "conference badge number", "loyalty card PIN",
    ),
    "alnum": (
        "wifi password", "router password", "booking reference", "confirmation code", "flight number",
        "licence plate", "train ticket code", "tracking number", "serial number", "voucher code", "promo code",
        "gift card code", "product key", "coupon code", "reservation code", "insurance policy number",
        "passport number", "library card number", "referral code", "backup code", "recovery key",
        "guest network password", "locker key tag", "visa application reference", "bike frame number",
        "parcel locker code", "car rental reference", "hotel booking code", "tax reference", "patient ID",
        "claim number", "warranty code", "laptop asset tag", "account handle", "boarding group code",
        "membership code", "delivery PIN", "lottery ticket code", "event pass code", "repair ticket",
    ),
    "word": (
        "cat's name", "dog's name", "goldfish's name", "horse's name", "boat's name", "car's nickname", "nickname",
        "childhood nickname", "gamer tag", "secret word", "safe word", "project codename", "favourite band",
        "username", "wifi network name", "imaginary friend's name", "houseplant's name", "robot vacuum's name",
        "hamster's name", "parrot's name", "tortoise's name", "guitar's name", "password hint", "team name",
        "book club's name", "pub quiz team name", "bicycle's name", "sourdough starter's name",
        "ship-in-a-bottle's name",
        "favourite made-up word", "stage name", "pen name", "rabbit's name", "lizard's name", "campervan's name",
        "chess club's name", "cafe of choice", "favourite cheese", "favourite tea blend", "village's old name",
        "grandfather's boat", "climbing route", "favourite font", "hiking club's name", "pet snail's name",
    ),
    "name": (
        "dentist's name", "doctor's name", "boss's name", "landlord's name", "neighbour's name",
        "best friend's name", "partner's name", "manager's name", "accountant's name", "plumber's name",
        "therapist's name", "piano teacher's name", "personal trainer's name", "mentor's name", "vet's name",
        "lawyer's name", "hairdresser's name", "babysitter's name", "mechanic's name", "childhood hero",
        "favourite author", "favourite singer", "first crush", "emergency contact", "travel agent's name",
        "tutor's name", "estate agent's name", "electrician's name", "swimming coach's name", "tailor's name",
        "driving instructor's name", "pen pal's name", "godparent's name", "team lead's name", "florist's name",
    ),
    "city": (
        "hometown", "birthplace", "favourite city", "honeymoon destination", "next holiday destination",
        "home city", "dream destination", "university town", "office location", "first trip abroad",
        "parents' city", "layover city", "conference city", "favourite weekend getaway", "retirement plan city",
        "childhood summer town", "pen pal's city", "exchange year city", "grandparents' town", "race city",
    ),
    "date": (
        "birthday", "anniversary", "wedding date", "dentist appointment", "passport expiry date",
        "lease end date", "moving day", "graduation date", "due date", "start date at work", "exam date",
        "flight date", "car service date", "visa interview date", "concert date", "court date", "surgery date",
        "book club meeting", "tax deadline", "vaccination date", "contract renewal date", "trial shift date",
    ),
    "number": (
        "shoe size", "favourite number", "lucky number", "number of cats", "number of siblings", "apartment floor",
        "seat row", "jersey number", "dress size", "ring size", "number of houseplants", "car's age",
        "team size", "daily coffee limit", "number of cousins", "bowling handicap", "marathon count",
        "hat size", "glove size", "number of guitars", "commute time in minutes", "bedtime hour", "reading goal",
        "number of chickens", "pull-up record", "gym days per month", "keyring key count",
    ),
    "dish": (
        "favourite dish", "comfort food", "go-to breakfast", "signature dish", "favourite dessert",
        "usual takeaway order", "favourite soup", "birthday cake flavour", "picnic staple", "late-night snack",
    ),
    "colour": (
        "favourite colour", "bedroom wall colour", "car colour", "front door colour", "lucky colour",
        "wedding colour", "bike colour", "umbrella colour", "raincoat colour", "kitchen tile colour",
    ),
    "title": (
        "favourite film", "favourite book", "favourite song", "karaoke song", "favourite board game",
        "favourite podcast", "comfort show", "first album", "favourite painting", "bedtime story",
    ),
}

# "my {relation}'s {attribute}" compounds: made-up but well-formed attributes
RELATIONS = (
    "mother", "father", "sister", "brother", "cousin", "aunt", "uncle", "grandmother", "grandfather", "neighbour",
    "boss", "landlord", "best friend", "roommate", "partner", "son", "daughter", "niece", "nephew", "colleague",
    "flatmate", "godmother", "stepbrother", "childhood friend", "coach", "mentor", "sister-in-law",
    "brother-in-law", "wife", "husband", "twin", "piano teacher",
)
RELATION_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("birthday", "date"), ("hometown", "city"), ("favourite band", "word"), ("favourite dish", "dish"),
    ("favourite colour", "colour"), ("favourite film", "title"), ("phone extension", "code"),
    ("lucky number", "number"), ("shoe size", "number"), ("dog's name", "word"), ("cat's name", "word"),
    ("middle name", "name"), ("licence plate", "alnum"), ("wifi password", "alnum"), ("anniversary", "date"),
    ("favourite author", "name"), ("apartment number", "code"), ("house number", "code"),
    ("favourite song", "title"), ("car colour", "colour"), ("locker code", "code"), ("nickname", "word"),
    ("flight number", "alnum"), ("favourite city", "city"),
)

# "my {object} {identifier}" compounds, all taking digit codes
CODE_OBJECTS = (
    "storage unit", "bike lock", "garage", "mailbox", "locker", "safe", "suitcase", "filing cabinet", "shed",
    "side gate", "office door", "basement", "gym bag", "toolbox", "desk drawer", "warehouse", "boat shed",
    "studio", "attic", "wine cellar", "treehouse", "jewellery box", "lockbox", "key safe", "bike shed",
    "server room", "trailer", "greenhouse", "darkroom", "rehearsal room",
)
CODE_IDENTIFIERS = ("code", "combination", "number", "PIN", "access code", "key number")

# "my {service} {identifier}" compounds, all taking alphanumeric strings
ALNUM_SERVICES = (
    "streaming account", "gym membership", "cloud backup", "laptop", "tablet", "printer", "email account",
    "frequent flyer account", "loyalty card", "museum pass", "ski pass", "parking permit", "smart lock",
    "game console", "car insurance", "electricity account", "phone plan", "bike share account",
)
ALNUM_IDENTIFIERS = ("password", "reference", "serial number", "account ID", "recovery code")

# value material
FIRST_NAMES = (
    "Marta", "Jonas", "Priya", "Tomasz", "Aisha", "Mateo", "Ingrid", "Kofi", "Yuki", "Lena", "Rafael", "Sanna",
    "Dmitri", "Amara", "Oskar", "Leila", "Henrik", "Chiara", "Tariq", "Nadia", "Bruno", "Freya", "Emeka", "Ines",
    "Viktor", "Maya", "Anselm", "Zofia", "Kenji", "Rosa", "Felix", "Hana", "Idris", "Clara", "Mikkel", "Sofia",
    "Arjun", "Beatriz", "Lukas", "Noor", "Elena", "Tobias", "Mei", "Gustav", "Olga", "Samir", "Astrid", "Diego",
    "Farah", "Jakob", "Lucia", "Nikolai", "Paloma", "Rohan", "Selma", "Theo", "Vera", "Wendell", "Ximena",
    "Yusuf", "Zara", "Agnes", "Bastian", "Camille", "Dario", "Esther", "Fabian", "Greta", "Hugo", "Iris", "Jorge",
    "Kaja", "Linus", "Mira", "Nils", "Odette", "Pavel", "Quinn", "Ruth", "Stellan", "Tamsin", "Ulrich", "Valeria",
    "Wiktor", "Yara", "Zeynep", "Adele", "Bram", "Cosima", "Dev", "Edith", "Florin", "Gemma", "Hamid", "Ilse",
    "Joaquin", "Keira", "Lorenzo", "Magda", "Nathan", "Orla", "Piet", "Rania", "Simone", "Tilda", "Umar",
    "Vivienne", "Wanda", "Yannick", "Zuzana", "Anouk", "Bodhi", "Cyrus", "Delphine", "Elio", "Fenna", "Gideon",
    "Helga", "Ivo", "Jelena", "Kasimir", "Liv", "Matthias", "Nerea", "Otto", "Petra", "Rafaela", "Soren",
)
LAST_NAMES = (
    "Kowalski", "Lindqvist", "Okafor", "Tanaka", "Moreau", "Haddad", "Fischer", "Rossi", "Novak", "Silva",
    "Brennan", "Castillo", "Dubois", "Eriksen", "Ferreira", "Gallo", "Horvat", "Ivanova", "Jansen", "Kaur",
    "Larsen", "Mendes", "Nakamura", "Olsen", "Petrov", "Quintero", "Reyes", "Schmidt", "Takahashi", "Uddin",
    "Varga", "Weber", "Yilmaz", "Zielinski", "Abbott", "Bianchi", "Costa", "Doyle", "Esposito", "Fontaine",
    "Grant", "Holm", "Iyer", "Jovanovic", "Keller", "Laurent", "Marsh", "Nilsson", "Oduya", "Pereira",
    "Ramos", "Sato", "Thornton", "Vidal", "Whitfield", "Young", "Zamora", "Aldridge", "Brandt", "Carvalho",
)
CITIES = (
    "Lisbon", "Porto", "Seville", "Valencia", "Bilbao", "Lyon", "Marseille", "Bordeaux", "Nantes", "Ghent",
    "Antwerp", "Utrecht", "Rotterdam", "Hamburg", "Leipzig", "Dresden", "Cologne", "Munich", "Salzburg",
    "Graz", "Zurich", "Basel", "Geneva", "Turin", "Bologna", "Naples", "Palermo", "Verona", "Trieste",
    "Ljubljana", "Zagreb", "Split", "Sarajevo", "Belgrade", "Sofia", "Bucharest", "Cluj", "Budapest",
    "Bratislava", "Brno", "Krakow", "Gdansk", "Wroclaw", "Vilnius", "Riga", "Tallinn", "Helsinki", "Tampere",
    "Uppsala", "Gothenburg", "Malmo", "Aarhus", "Bergen", "Trondheim", "Reykjavik", "Galway", "Cork",
    "Edinburgh", "Glasgow", "Bristol", "Leeds", "Cardiff", "Belfast", "Halifax", "Quebec", "Montreal",
    "Winnipeg", "Calgary", "Vancouver", "Seattle", "Portland", "Denver", "Austin", "Nashville", "Savannah",
    "Boston", "Chicago", "Detroit", "Tucson", "Oaxaca", "Puebla", "Guadalajara", "Merida", "Bogota",
    "Medellin", "Quito", "Cusco", "Lima", "Valparaiso", "Santiago", "Mendoza", "Montevideo", "Recife",
    "Salvador", "Fortaleza", "Manaus", "Dakar", "Accra", "Lagos", "Nairobi", "Kampala", "Kigali", "Lusaka",
    "Windhoek", "Durban", "Marrakesh", "Tunis", "Cairo", "Amman", "Beirut", "Tbilisi", "Yerevan", "Baku",
    "Almaty", "Tashkent", "Samarkand", "Lahore", "Jaipur", "Pune", "Kochi", "Chennai", "Colombo", "Kathmandu",
    "Dhaka", "Yangon", "Chiang Mai", "Hanoi", "Hue", "Penang", "Kuching", "Cebu", "Busan", "Daegu", "Sapporo",
    "Sendai", "Kyoto", "Fukuoka", "Taipei", "Tainan", "Hobart", "Adelaide", "Perth", "Darwin", "Wellington",
    "Dunedin", "Nelson", "Suva", "Apia",
)
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DISH_ADJECTIVES = (
    "spicy", "lemon", "garlic", "smoked", "roasted", "creamy", "crispy", "sweet potato", "mushroom", "pumpkin",
    "coconut", "ginger", "honey", "chilli", "herb", "slow-cooked", "grilled", "saffron", "sesame", "miso",
    "tomato", "spinach", "cheesy", "pepper", "walnut", "fennel", "maple", "truffle", "lime", "cinnamon",
)
DISHES = (
    "risotto", "noodle soup", "dumplings", "lasagne", "curry", "tacos", "pancakes", "flatbread", "stew",
    "pie", "ramen", "salad", "omelette", "gnocchi", "paella", "burrito", "porridge", "tart", "waffles",
    "fried rice", "chowder", "casserole", "dal", "goulash", "pasta bake", "toastie", "bao buns", "cheesecake",
    "crumble", "shakshuka",
)
COLOUR_SHADES = (
    "dusty", "deep", "pale", "bright", "burnt", "electric", "forest", "midnight", "soft", "sea", "sky",
    "olive", "rust", "mustard", "powder", "smoky", "warm", "cool", "neon", "storm",
)
COLOURS = (
    "blue", "green", "rose", "orange", "teal", "plum", "grey", "yellow", "lilac", "red", "mint", "coral",
    "ochre", "indigo", "cream", "violet", "sand", "copper", "jade", "pink",
)
TITLE_ADJECTIVES = (
    "Silent", "Golden", "Broken", "Hidden", "Last", "Velvet", "Paper", "Distant", "Crimson", "Quiet", "Hollow",
    "Burning", "Glass", "Winter", "Lonely", "Secret", "Wandering", "Electric", "Sleeping", "Forgotten",
    "Restless", "Northern", "Painted", "Endless", "Little", "Wild", "Borrowed", "Midnight", "Salt", "Iron",
)
TITLE_NOUNS = (
    "Harbour", "Garden", "Orchard", "Lantern", "River", "Mirror", "Kingdom", "Letter", "Island", "Compass",
    "Staircase", "Season", "Carousel", "Forest", "Violin", "Tide", "Meadow", "Cathedral", "Balcony", "Horizon",
    "Bridge", "Lighthouse", "Feather", "Clockmaker", "Map", "Orchestra", "Canyon", "Parade", "Window", "Atlas",
)

# made-up words are built from syllables = onset + vowel + coda; the syllable inventory is split train/heldout
SYLLABLE_ONSETS = (
    "b", "br", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kl", "l", "m", "n", "p", "pl", "r", "s",
    "sh", "sk", "st", "t", "tr", "v", "w", "z", "th", "sn",
)
SYLLABLE_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ei")
SYLLABLE_CODAS = ("", "", "n", "r", "l", "k", "s", "m")

# distractor slot material
ACTIVITIES = (
    "baking bread", "repotting plants", "sorting old photos", "cleaning the garage", "learning chords",
    "painting the fence", "reading in the garden", "fixing my bike", "doing a jigsaw", "walking by the river",
    "writing letters", "trying a new recipe", "rearranging the furniture", "watching old cartoons",
    "knitting a scarf", "tidying my desk", "practising yoga", "building a bookshelf",
)
FOODS = (
    "pizza", "sushi", "lentil soup", "pad thai", "banana bread", "paella", "dumplings", "falafel", "lasagne",
    "ramen", "a fruit salad", "chili", "pancakes", "tacos", "a mushroom pie", "couscous", "fish and chips",
    "a vegetable curry", "gnocchi", "bibimbap",
)

# first statements of a fact
FACT_TEMPLATES = (
    "Just so you know, my {attr} is {value}.",
    "FYI my {attr}: {value}",
    "Remember that my {attr} is {value}.",
    "My {attr} is {value}.",
    "Quick note: my {attr} is {value}.",
    "Please remember my {attr}: {value}.",
    "Can you keep track of something? My {attr} is {value}.",
    "For future reference, my {attr} is {value}.",
    "By the way, my {attr} is {value}.",
    "I should tell you that my {attr} is {value}.",
    "Don't let me forget: my {attr} is {value}.",
    "My {attr}? It's {value}.",
    "Here's something to remember: my {attr} is {value}.",
    "Oh, and my {attr} is {value}, in case I ask later.",
    "{value} is my {attr}, by the way.",
    "Write this down: my {attr} = {value}",
    "Store this for me, {attr}: {value}.",
    "Heads up, my {attr} is {value}.",
    "In case it comes up, my {attr} is {value}.",
    "So, my {attr} is {value}. Keep that in mind.",
    "I keep forgetting this, so: my {attr} is {value}.",
    "Save this please. My {attr}: {value}.",
    "Okay, important: my {attr} is {value}.",
    "Fun fact, my {attr} is {value}.",
    "I just realised I never told you my {attr}. It's {value}.",
    "Let me give you my {attr}: {value}.",
    "My {attr} is {value}, if you need it.",
    "Remember this one: {attr} is {value} for me.",
    "You might need this later: my {attr} is {value}.",
    "Small detail, but my {attr} is {value}.",
    "Jot this down: my {attr} is {value}.",
    "For the record, my {attr} is {value}.",
    "Keep in mind that my {attr} is {value}.",
    "Could you remember that my {attr} is {value}?",
    "My {attr} is {value}. Please hang on to that.",
    "Just noting that my {attr} is {value}.",
    "Here it is: my {attr} is {value}.",
    "Thought you should know my {attr} is {value}.",
    "Mental note for you: my {attr} is {value}.",
    "my {attr} is {value} btw",
    "One thing to file away: my {attr}, which is {value}.",
    "If anyone asks, my {attr} is {value}.",
)
# later statements that override an earlier value
UPDATE_TEMPLATES = (
    "My {attr} changed, it's now {value}.",
    "Update: my {attr} is now {value}.",
    "Actually, my {attr} is {value} now.",
    "Correction: my {attr} is {value}, not what I said before.",
    "Scratch that, my {attr} is {value}.",
    "I changed my {attr}. The new one is {value}.",
    "Forget the old one, my {attr} is now {value}.",
    "New {attr}: {value}. The old one is no longer valid.",
    "Heads up, my {attr} has changed to {value}.",
    "Quick update on my {attr}: it's {value} now.",
    "My {attr} is different now. It's {value}.",
    "Please update my {attr} to {value}.",
    "I was wrong earlier: my {attr} is actually {value}.",
    "They changed my {attr}; it's {value} from now on.",
    "Replace my old {attr} with {value}.",
    "From now on, my {attr} is {value}.",
    "My new {attr} is {value}.",
    "Just updated my {attr}, it's now {value}.",
    "Note the change: my {attr} became {value}.",
    "Ignore what I said before about my {attr}; it's {value}.",
    "Latest {attr}: {value}.",
    "My {attr} got changed to {value}.",
    "Changing my {attr} to {value}, please remember the new one.",
    "Small correction, my {attr} is {value}.",
    "Turns out my {attr} is {value}, not the earlier one.",
)
# assistant replies to a fact; the ones without {attr}/{value} also acknowledge recall pairs
ACK_TEMPLATES = (
    "Got it.",
    "Noted!",
    "Okay, I'll remember that.",
    "Thanks, saved.",
    "Understood.",
    "Sure thing, noted.",
    "All right, I've got it.",
    "Got it: your {attr} is {value}.",
    "Noted: {attr} is {value}.",
    "I'll keep that in mind.",
    "Okay, your {attr} is {value}. Got it.",
    "Thanks for letting me know.",
    "Sure, I'll remember your {attr}.",
    "Done, I've noted your {attr}.",
    "Okay!",
    "Perfect, thanks.",
    "Will do.",
    "Consider it remembered.",
    "I've made a note of it.",
    "Understood, your {attr} is {value}.",
    "Thanks! I'll remember.",
    "Got it, thanks for the heads up.",
    "Right, noted.",
    "Saved your {attr}.",
    "I'll remember that your {attr} is {value}.",
    "Okay, filed away.",
    "Noted, {value} it is.",
    "Great, I have it.",
)
UPDATE_ACK_TEMPLATES = (
    "Updated!",
    "Got it, I've updated your {attr} to {value}.",
    "Okay, the new one is {value}.",
    "Noted the change.",
    "Thanks, I'll use the new {attr} from now on.",
    "Changed it: {value}.",
    "Okay, your {attr} is now {value}.",
    "Got it, the old one is forgotten.",
    "Done, updated your {attr}.",
    "Understood, replacing the old value.",
    "Right, the new {attr} is {value}.",
    "Okay, I've swapped it.",
)
QUESTION_TEMPLATES = (
    "What is my {attr}?",
    "What's my {attr}?",
    "Do you remember my {attr}?",
    "Remind me, what is my {attr}?",
    "What was my {attr} again?",
    "Can you tell me my {attr}?",
    "I forgot my {attr}. What is it?",
    "Quick question: what's my {attr}?",
    "Do you know my {attr}?",
    "Tell me my {attr}, please.",
    "What did I say my {attr} was?",
    "Hey, what's my {attr} these days?",
    "Could you remind me of my {attr}?",
    "Any idea what my {attr} is?",
    "My {attr}: what is it again?",
    "Please tell me my current {attr}.",
    "I need my {attr}. What is it?",
    "What's my current {attr}?",
    "what is my {attr}",
    "Remind me of my {attr}?",
    "Sorry, what was my {attr}?",
    "Which {attr} do I have now?",
    "Can you look up my {attr} for me?",
    "Do you still have my {attr}?",
)
ANSWER_TEMPLATES = (
    "Your {attr} is {value}.",
    "It's {value}.",
    "Your {attr} is {value}, as you told me.",
    "That would be {value}.",
    "You told me your {attr} is {value}.",
    "Your current {attr} is {value}.",
    "It is {value}.",
    "{value}.",
    "Your {attr}: {value}.",
    "I have your {attr} as {value}.",
    "According to what you told me, it's {value}.",
    "Sure, your {attr} is {value}.",
    "You said it's {value}.",
    "That's {value}.",
    "Last I heard, your {attr} is {value}.",
    "Your latest {attr} is {value}.",
    "I remember: {value}.",
    "It's {value}, if I recall correctly.",
    "Your {attr} should be {value}.",
    "You gave me {value} for your {attr}.",
)

# chit-chat distractors; slots are filled by data._SLOT_DRAWS
USER_CHAT = (
    "I went for a walk in the park this morning.",
    "The weather has been strange lately.",
    "I'm thinking of learning to cook {food}.",
    "My friend {name} is visiting next week.",
    "I just got back from {city}.",
    "I ran {n} kilometres yesterday, which felt great.",
    "Work has been really busy this week.",
    "Do you have any tips for sleeping better?",
    "I watched a documentary about octopuses last night.",
    "{name} recommended a new podcast to me.",
    "We had {n} people over for dinner on {day}.",
    "My train was {n} minutes late again.",
    "I'm trying to drink more water.",
    "I finally finished the book I was reading.",
    "My neighbour {name} got a new puppy.",
    "I've been listening to a lot of jazz recently.",
    "The coffee shop near my office closed down.",
    "I'm planning a trip to {city} in {month}.",
    "It took me {n} tries to parallel park today.",
    "I spent the afternoon {activity}.",
    "My sister keeps sending me memes.",
    "I think I need a new pair of running shoes.",
    "Our team meeting ran over by {n} minutes.",
    "I bought {n} plants at the market.",
    "{name} and I are going to a concert on {day}.",
    "I tried making {food} but it didn't turn out well.",
    "My phone battery dies so quickly these days.",
    "I've been meaning to call my grandmother.",
    "I saw a fox in the garden this evening.",
    "The new season of that show starts in {month}.",
    "I'm so tired today.",
    "I cleaned the whole kitchen this morning.",
    "It rained all day in {city}.",
    "I'm reading about the history of maps.",
    "My cousin {name} just moved to {city}.",
    "The library has a sale on old books.",
    "I had {food} for lunch.",
    "I keep forgetting my {attr}, honestly.",
    "Someone asked me about my {attr} today.",
    "I walked about {num} steps today.",
    "Our flat is on a very noisy street.",
    "I want to get better at chess.",
    "The museum in {city} was amazing.",
    "My laptop is making a weird noise.",
    "I might start a vegetable garden.",
    "{name} told me a funny story about a goat.",
    "We're having a picnic if the weather holds.",
    "I signed up for a pottery class.",
    "The traffic this morning was terrible.",
    "The concert tickets cost {n} euros each.",
    "I've been up since {hour} o'clock.",
    "I need to renew my library card soon.",
    "Have you ever heard of the band {word}?",
    "I met someone called {name} at the party.",
    "My boss wants the report by {day}.",
    "I started a puzzle with {num} pieces.",
    "We watched the sunset from the hill.",
    "My favourite season is definitely autumn.",
    "I'm learning a few words of Portuguese.",
    "My knee has been hurting after running.",
    "I finally fixed the leaky tap.",
    "I'm trying to spend less time on my phone.",
    "The cat knocked a glass off the table again.",
    "{name} is turning {n} next month.",
    "I booked a table for {n} at {hour} o'clock.",
    "I counted {n} birds at the feeder this morning.",
    "The parcel should arrive on {day}.",
    "I'm thinking about repainting the bedroom.",
    "I read that {city} has the best street food.",
    "My running club meets every {day}.",
    "I lost my umbrella on the tram.",
    "It's been {n} days since I had a proper day off.",
    "I watched an old film with {name} last night.",
    "We're planning a barbecue for {month}.",
    "I need to buy a birthday present for {name}.",
    "The queue at the post office was {n} people long.",
    "I think I'm catching a cold.",
    "I've started journaling before bed.",
    "My playlist has {num} songs on it now.",
    "I heard {city} is lovely in {month}.",
    "I tried a {n} minute meditation today.",
    "I made too much {food} again.",
    "Our internet was down for {n} hours.",
    "I want to visit {city} someday.",
    "My friend {name} is learning the violin.",
    "I spent {n} minutes looking for my keys this morning.",
    "The lake was freezing but we swam anyway.",
    "I fell asleep on the sofa again.",
    "What do you think about {food}?",
    "Do you like rainy days?",
    "What's a good name for a goldfish?",
    "Any book recommendations?",
    "How do I get better at waking up early?",
    "Tell me something interesting.",
    "Can you explain how tides work?",
    "Why is the sky blue?",
    "Do you know any good riddles?",
    "Is it weird to have cereal for dinner?",
    "My old school in {city} is closing down.",
    "{name} says the bakery on the corner sells out by {hour}.",
    "The bus was so full that I waited for the next one.",
    "I dropped my keys down the drain, long story.",
    "I've had the same song stuck in my head all day.",
    "The heating in our building broke again.",
    "I owe {name} a coffee.",
    "There were {num} runners at the race on {day}.",
    "My {attr} is something I never remember.",
)
ASSISTANT_CHAT = (
    "That sounds lovely!",
    "Oh no, that sounds frustrating.",
    "Nice! How did it go?",
    "That's great to hear.",
    "I hope you have a good time.",
    "Interesting, tell me more.",
    "That must have been fun.",
    "Fair enough, that happens to everyone.",
    "Sounds like a busy week.",
    "Good luck with that!",
    "That's a lovely way to spend the day.",
    "I'd love to hear how it turns out.",
    "Honestly, that sounds relaxing.",
    "A good night's sleep helps with almost everything.",
    "Try keeping a regular schedule; it usually helps.",
    "Tides are mostly caused by the moon's gravity pulling on the oceans.",
    "The sky looks blue because air scatters blue light more than red light.",
    "Cereal for dinner is a classic, no judgement here.",
    "Here's one: what has keys but can't open locks? A piano.",
    "Small steps add up over time.",
    "{name} sounds like a good friend.",
    "{city} is a great choice.",
    "That's a lot of {food}!",
    "Wow, {n} is more than I expected.",
    "Did you enjoy it?",
    "What made you decide that?",
    "That's a good habit to build.",
    "I'm sorry to hear that. I hope it gets better soon.",
    "Ha, that's a good one.",
    "It sounds like you deserve a break.",
    "Maybe try a different recipe next time.",
    "Plants are a great addition to any home.",
    "A walk in the park is always a good idea.",
    "That's impressive!",
    "I can imagine that was tiring.",
    "Enjoy the trip!",
    "Sounds like a plan.",
    "You could try asking {name} for advice.",
    "Have you thought about writing it down?",
    "That sounds like quite an adventure.",
    "Music is a great way to unwind.",
    "A classic choice.",
    "Let me know if you want some suggestions.",
    "Thanks for sharing that.",
    "Oh, how exciting!",
    "I'm glad it worked out.",
    "That's very thoughtful of you.",
    "Everyone needs a lazy day now and then.",
    "It's worth a try.",
    "Hopefully the weather cooperates.",
    "Happy to help whenever you need.",
    "That's a tricky one.",
    "Funny how these things happen.",
    "Keep me posted.",
    "Sounds cosy.",
    "That's a long time to wait.",
    "I bet that was satisfying.",
    "Good call.",
    "Take care of yourself.",
    "Learning something new is always rewarding.",
    "That's quite the story.",
    "I hope the rest of your day is calmer.",
    "It's nice when things come together.",
    "That's a good question. Many people wonder the same thing.",
    "You might enjoy a mystery novel; they are great for rainy days.",
    "A goldfish called Bubbles is a classic.",
    "{n} minutes is not bad at all.",
    "{month} is a nice time of year for that.",
    "Say hi to {name} from me!",
    "I've heard good things about {city}.",
)
USER_SHORT = ("ok", "Thanks!", "Cool.", "Haha.", "Nice.", "Hmm.", "Sure.", "Yep.", "True.", "Fair.", "Lol.", "Ah.",
              "Yes.", "No.", "Wow.", "Neat.", "Oh well.", "Indeed.", "Mm.", "Heh.")
ASSISTANT_SHORT = ("Sure!", "Anytime.", ":)", "Of course.", "Yes!", "Mhm.", "Ha!", "Glad to help.", "Right!",
                   "Cheers.", "Totally.", "Exactly.", "No problem.", "Yup.", "Same here.", "Aw.")

# passkey filler: simple sentences without digits (round 1 style, with more variety)
FILLER_SENTENCES = (
    "The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.",
    "The river flows to the sea.", "Birds sing in the morning.", "The road is long and quiet.",
    "A cat sleeps by the window.", "The wind moves the leaves.", "Clouds drift over the hills.",
    "The kettle is on the stove.", "Snow falls softly at night.", "The old clock ticks slowly.",
    "Bread is baking in the oven.", "The boat rocks on the water.", "A dog barks in the distance.",
    "The lamp glows in the corner.", "Rain taps on the roof.", "The train passes through the valley.",
    "Flowers open in the spring.", "The market is busy today.", "Children play in the yard.",
    "The moon rises over the town.", "The path winds through the forest.", "Stars shine above the field.",
    "The door creaks when it opens.", "A bee buzzes near the roses.", "The tea is still warm.",
    "The bridge crosses the river.", "Leaves turn red in autumn.", "The fire crackles in the hearth.",
    "A farmer walks to the barn.", "The bell rings at noon.", "Waves crash on the shore.",
    "The garden needs water.", "The mountain is covered in mist.", "A letter waits on the table.",
    "The shop opens early.", "Fish swim in the pond.", "The fence is painted white.",
    "The book lies open on the desk.", "A breeze comes through the window.", "The city lights flicker at dusk.",
    "The baker sings while he works.", "Frogs croak by the lake.", "The street is wet after the rain.",
    "The owl watches from the tree.", "Apples hang from the branches.", "The horse runs across the meadow.",
    "A candle burns on the shelf.", "The ship sails toward the horizon.", "The snow melts in the sun.",
    "The soup simmers on the stove.", "The sand is warm underfoot.", "A squirrel climbs the oak.",
    "The lighthouse guards the bay.", "The stream is cold and clear.", "Smoke rises from the chimney.",
    "The orchard is quiet at dawn.", "The hills roll on and on.", "A kite flies over the beach.",
    "The paint is dry now.", "The storm has passed.", "The library is calm and still.", "A fox crosses the road.",
    "The loaf is fresh.", "The valley is green and wide.", "Morning comes slowly in winter.",
    "The gate swings in the wind.", "Ducks paddle across the pond.", "The rooftops shine after rain.",
    "A sparrow hops along the fence.", "The wheat sways in the field.", "The cave is dark and deep.",
    "The blanket is soft and warm.", "The harbour is full of boats.", "A train whistle sounds far away.",
    "The desert is silent at night.", "Pebbles line the garden path.",
)
NEEDLE_TEMPLATES = (
    "The pass key is {value}. Remember it.",
    "Remember this pass key: {value}.",
    "The pass key is {value}. Keep it in mind.",
    "Here is the pass key: {value}. Do not forget it.",
    "Note the pass key, {value}, for later.",
    "The secret pass key is {value}.",
    "Your pass key is {value}. Remember it well.",
    "Pass key: {value}. Memorise it.",
    "Keep this pass key safe: {value}.",
    "The pass key you need is {value}.",
)
PASSKEY_QUESTIONS = (
    "What is the pass key?",
    "What was the pass key?",
    "Tell me the pass key.",
    "What pass key was mentioned?",
    "Can you recall the pass key?",
    "Which pass key did I give you?",
    "Remind me of the pass key.",
    "What is the secret pass key?",
)
PASSKEY_ANSWERS = (
    "The pass key is {value}.",
    "It is {value}, the pass key.",
    "The pass key was {value}.",
    "{value} is the pass key.",
    "Pass key: {value}.",
    "The secret pass key was {value}.",
    "I remember the pass key: {value}.",
    "That pass key would be {value}.",
)

# echo: a phrase of made-up words and codes, asked back verbatim (dense training of copying any string)
ECHO_INTROS = (
    "Remember this phrase exactly: {value}",
    "Here is a note, word for word: {value}",
    "Copy this down: {value}",
    "Keep this exact line for me: {value}",
    "The phrase to remember is {value}.",
    "Store these words as they are: {value}",
    "Note this down verbatim: {value}",
    "Hold on to this line: {value}",
    "Word for word, please keep: {value}",
    "My phrase for today: {value}",
)
ECHO_QUESTIONS = (
    "What was the phrase?",
    "Repeat the note word for word.",
    "Say the line back to me.",
    "What exact words did I give you?",
    "Can you repeat my phrase?",
    "Read me back the note.",
    "What was the line I asked you to keep?",
    "Give me the phrase again, exactly.",
)
ECHO_ANSWERS = (
    "The phrase was {value}.",
    "Your note: {value}",
    "The line is {value}.",
    "You gave me: {value}",
    "It was {value}.",
    "Word for word: {value}",
    "Here it is: {value}",
    "The words were {value}.",
)

# multi-query associative recall
RECALL_INTROS = (
    "Please remember these pairs:",
    "Keep track of the following pairs:",
    "Here is a list to memorise:",
    "Store these key-value pairs for me:",
    "Memorise this table:",
    "I need you to remember this list:",
    "Note down these pairings:",
    "Hold on to these for later:",
    "Pairs to keep in mind:",
    "A lookup table for you:",
)
RECALL_LINES = (
    "{key}: {value}",
    "{key} -> {value}",
    "{key} = {value}",
    "{key} - {value}",
    "{key} => {value}",
    "{key} is {value}",
    "{key} maps to {value}",
    "{key}, {value}",
)
RECALL_STATEMENTS = (
    "Note: {key} goes with {value}.",
    "Pair {key} with {value}.",
    "The value for {key} is {value}.",
    "Remember that {key} maps to {value}.",
    "{key} is paired with {value}.",
    "Link {key} to {value}, please.",
    "Add this pair: {key} and {value}.",
    "Write down {key} next to {value}.",
    "Keep {key} together with {value}.",
    "Another pair: {key} belongs to {value}.",
)
RECALL_QUESTIONS = (
    "What goes with {key}?",
    "What is the value for {key}?",
    "Which value was paired with {key}?",
    "What does {key} map to?",
    "What was listed next to {key}?",
    "Remind me what {key} is paired with.",
    "What is {key} linked to?",
    "Look up {key} for me.",
    "Which value belongs to {key}?",
    "{key} goes with what?",
)
RECALL_ANSWERS = (
    "{key} goes with {value}.",
    "The value for {key} is {value}, as listed.",
    "{key} maps to {value}, from the list.",
    "It is paired with {value}.",
    "{key} was listed with {value}.",
    "That is {value}.",
    "{key} is linked to {value}.",
    "The paired value is {value}.",
    "{value} belongs to {key}.",
    "You paired it with {value}.",
)

# ---- broader forms (issue 21 item 4): used by data.py when `forms="rich"` ----
# Each family is a group of templates that share their wording; the train/heldout partition is by family, so a
# held-out family is a whole way of saying things that training never saw. Every family mixes value-first,
# value-last and colon forms only where its wording allows; each form is in several families of each split.
RICH_FACT_FAMILIES: dict[str, tuple[str, ...]] = {
    "value_first": ("{value} is my {attr}.", "{value}, that's my {attr}, don't lose it."),
    "dash_first": ("{value} - that's my {attr}.", "{value} is what my {attr} is these days."),
    "colon_bare": ("{attr}: {value}", "my {attr} -> {value}"),
    "regarding": ("Re my {attr}: {value}.", "About my {attr}, it's {value}."),
    "hold_on": ("Could you hold on to my {attr} for me? It's {value}.", "Hang onto this for me: {value} is my {attr}."),
    "just_got": ("Just got my {attr} sorted, it's {value}.", "They finally gave me my {attr}: {value}."),
    "note_to_self": ("Note to self, {attr} is {value}.", "Reminder for future me: my {attr} = {value}."),
    "for_the_desk": ("I told the front desk my {attr} is {value}, so you should know it too.",
                     "Someone asked for my {attr} today, it's {value}."),
    "set_to": ("I set my {attr} to {value}.", "We settled on {value} as my {attr}."),
    "in_case": ("It's {value}, my {attr}, in case you need it.", "In case I lose it again: {attr} {value}."),
    "long_story": ("Long story short, my {attr} ended up being {value}.",
                   "After all that back and forth, my {attr} is {value}."),
    "casual": ("oh and my {attr} is {value} lol", "ok so my {attr} is {value}"),
    "keep": ("Keep my {attr} somewhere safe: {value}.", "Can you save my {attr}? {value}."),
    "turns_out": ("Looked it up, my {attr} is {value}.", "Checked the paperwork and my {attr} says {value}."),
}
RICH_UPDATE_FAMILIES: dict[str, tuple[str, ...]] = {
    "actually": ("actually, make my {attr} {value}", "Actually my {attr} is {value} now, they changed it."),
    "switched": ("I switched my {attr} to {value}.", "Switched my {attr} over to {value} today."),
    "new_one": ("{value} is my new {attr}.", "New one for my {attr}: {value}."),
    "wrong_before": ("Sorry, I gave you the wrong {attr} before. It's {value}.", "my bad, {attr} is really {value}"),
    "moved": ("They moved my {attr} to {value}.", "My {attr} got moved to {value} this week."),
    "not_old": ("Not the old one anymore: my {attr} is {value}.", "Forget what I said, {value} is my {attr} now."),
    "reset": ("Had to reset my {attr}, it's {value} now.", "My {attr} was reset to {value}."),
}
RICH_QUESTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "blanking": ("I'm blanking on my {attr}, what was it?", "Totally blanking, what's my {attr}?"),
    "need_now": ("I need my {attr} right now, what is it?", "Need my {attr} quick, what was it?"),
    "gave_you": ("What {attr} did I give you?", "Which {attr} did I tell you about?"),
    "pls": ("remind me my {attr} pls", "Can you remind me what my {attr} is?"),
    "again": ("whats my {attr} again", "what's the {attr} I gave you?"),
    "as_of_now": ("What's my {attr} as of now?", "Which {attr} am I on now?"),
    "pull_up": ("Could you pull up my {attr}?", "Pull up my {attr} for me?"),
    "sorry_again": ("Sorry to ask again, but my {attr}?", "Me again, what's my {attr}?"),
    "filling_form": ("I'm filling in a form, what's my {attr}?", "The form wants my {attr}. What is it?"),
}
RICH_ANSWER_FAMILIES: dict[str, tuple[str, ...]] = {
    "dash": ("{value} - that's your {attr}.", "{value}, your {attr}."),
    "you_said": ("You told me {value}.", "You said your {attr} was {value}."),
    "looks_like": ("Looks like it's {value}.", "That one's {value}."),
    "echo_attr": ("Your {attr}? {value}.", "Your {attr}: it's {value}."),
    "have_down": ("I've got {value} down as your {attr}.", "I have {value} for your {attr}."),
    "latest": ("The most recent one you gave me is {value}.", "Most recently you said {value}."),
    "sure": ("Sure - {value}.", "Of course: {value}."),
    "here": ("Here you go: {value}.", "Here it is, your {attr}: {value}."),
}
RICH_ACK_FAMILIES: dict[str, tuple[str, ...]] = {
    "restate_value": ("Okay, {value} for your {attr}.", "Saved {value} as your {attr}."),
    "safe": ("Noted, I'll hang onto that.", "Got it, safe with me."),
    "ask_me": ("Sure, just ask when you need it.", "Okay, ask me any time."),
    "repeat": ("{attr}: {value}. Got it.", "So that's {value}. Noted."),
    "short": ("Cool, noted.", "Okey dokey."),
    "done": ("Done.", "All saved."),
}

# pass keys in several wordings (the issue names the first five; they are always training wordings, so every one
# of them is trained; the others are split train/heldout)
PASSKEY_WORDINGS_CORE = ("pass key", "passkey", "password", "code", "PIN")
PASSKEY_WORDINGS_EXTRA = (
    "secret number", "access code", "vault passkey", "secret code", "pass code", "entry code", "security code",
    "unlock code", "key number", "magic number", "login code", "vault code", "master code", "passphrase",
)
KEY_NEEDLE_FAMILIES: dict[str, tuple[str, ...]] = {
    "is": ("The {key} is {value}. Hold on to it.", "Today's {key} is {value}."),
    "first": ("{value} is the {key}. Don't lose it.", "{value} - that is the {key}."),
    "colon": ("{key}: {value}. That is all.", "{key} = {value}, keep it."),
    "memorise": ("Remember the {key} {value} for later.", "Please memorise the {key}, which is {value}."),
    "given": ("You have been given the {key}: {value}.", "I was handed the {key} {value} today."),
    "use": ("Use {value} as the {key}.", "Enter {value} when asked for the {key}."),
    "quiet": ("Between us, the {key} is {value}.", "Keep it quiet: the {key} is {value}."),
    "jot": ("Write this {key} down: {value}.", "Jot down the {key}, {value}."),
}
KEY_QUESTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "whats": ("What's the {key}?", "so what is the {key}"),
    "again": ("Tell me the {key} again.", "Give me the {key}."),
    "which": ("Remind me, what {key} did I mention?", "Which {key} was it?"),
    "enter": ("I need the {key} now. What is it?", "What {key} should I enter?"),
    "repeat": ("Do you recall the {key}?", "Can you repeat the {key}?"),
}
KEY_ANSWER_FAMILIES: dict[str, tuple[str, ...]] = {
    "that": ("That {key} is {value}.", "{value} is the {key} you gave me."),
    "its": ("It's {value}, that {key}.", "You gave me {value}."),
    "yours": ("Your {key}: {value}.", "I have the {key} as {value}."),
    "enter": ("Enter {value}.", "Type {value} for the {key}."),
}

# chit-chat from a topic grammar: a user sentence is lead + clause + tail; an assistant turn is one or two replies.
# Clauses, leads, tails and replies are each split train/heldout item by item (salted by topic and part).
CHAT_LEADS = (
    "", "", "Honestly, ", "So ", "Ugh, ", "Funny thing, ", "Anyway, ", "Not sure why I'm telling you, but ",
    "Random update: ", "Oh, and ", "Well, ", "Guess what, ", "Side note, ", "Okay so ", "Small thing, ",
)
CHAT_TAILS = (
    "", "", "", " again", " this week", " last weekend", " if I'm honest", ", which was a bit much",
    " for once", ", no idea why", " and I'm still recovering", ", typical", " as usual", " at long last",
)
CHAT_TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "travel": {
        "clause": (
            "we spent {n} hours stuck at the airport", "I'm trying to decide whether {city} is worth it in {month}",
            "the hostel in {city} had paper-thin walls", "my suitcase came back with a broken wheel",
            "{name} wants to take the night train", "I keep checking flight prices to {city}",
            "we got lost looking for the old town", "the ferry was cancelled because of the wind",
            "I finally renewed my travel insurance", "the hotel breakfast was surprisingly good",
        ),
        "reply": (
            "Travel days like that are exhausting.", "Both sound like great trips.", "Airports can be brutal.",
            "A night train sounds like an adventure.", "Getting lost is half the fun, sometimes.",
            "Hopefully the next leg is smoother.",
        ),
    },
    "health": {
        "clause": (
            "my back has been stiff since {day}", "I started stretching before bed", "I've cut down on coffee",
            "the physio gave me a sheet of exercises", "I slept for {n} hours straight",
            "I'm getting over a cough", "I booked a check-up for {month}", "my allergies are acting up",
            "I've been walking to work instead of taking the bus", "I forgot to take my vitamins",
        ),
        "reply": (
            "Rest helps more than people think.", "Stretching is a good habit.", "I hope you feel better soon.",
            "That sounds like a sensible plan.", "Go easy on yourself.", "Walking is underrated.",
        ),
    },
    "family": {
        "clause": (
            "my mum called for an hour about the garden", "{name} came round with the kids",
            "my brother is redecorating his flat", "we're planning a surprise for grandad",
            "my aunt sent a parcel full of jam", "the cousins are all coming over on {day}",
            "my dad finally learned to video call", "{name} and I argued about the dishes",
            "we looked through old family photos", "my nephew lost his first tooth",
        ),
        "reply": (
            "Family visits can be a lot, in a good way.", "That's sweet.", "Sounds like a full house.",
            "What a nice thing to do.", "Those photos must bring back memories.", "Ha, classic.",
        ),
    },
    "work": {
        "clause": (
            "the quarterly review got moved to {day}", "my inbox has {num} unread emails",
            "{name} is leaving the team", "we had a fire drill in the middle of a meeting",
            "the printer jammed for the whole afternoon", "I'm presenting to the board in {month}",
            "my manager wants a new slide deck", "I stayed late to finish a spreadsheet",
            "the office kitchen ran out of milk", "we're hiring two new people",
        ),
        "reply": (
            "That sounds stressful.", "Hopefully it calms down soon.", "Meetings have a way of multiplying.",
            "Good luck with the presentation.", "That's a lot on your plate.", "Office life, eh.",
        ),
    },
    "food": {
        "clause": (
            "I tried a new recipe for {food}", "the bakery ran out of sourdough", "we ordered way too much {food}",
            "I burnt the rice", "{name} taught me how to make {food}", "the farmers market had great tomatoes",
            "I'm doing a meal prep on {day}", "the new noodle place down the road is packed",
            "I've been eating a lot of soup", "my sourdough finally rose properly",
        ),
        "reply": (
            "That sounds delicious.", "Cooking for yourself is so satisfying.", "Leftovers are never a bad thing.",
            "Burnt rice happens to everyone.", "Fresh tomatoes are the best.", "Yum.",
        ),
    },
    "hobbies": {
        "clause": (
            "I finished a thousand-piece puzzle", "I've been {activity}", "my guitar needs new strings",
            "I joined a choir", "the climbing gym was packed", "I started a sketchbook",
            "{name} got me into birdwatching", "I went to a pottery evening", "I'm learning to knit socks",
            "I planted tulip bulbs",
        ),
        "reply": (
            "What a nice hobby.", "That takes patience.", "I love that.", "You'll have to show me sometime.",
            "Sounds like fun.", "Good for you for trying something new.",
        ),
    },
    "home": {
        "clause": (
            "the boiler is making a clanking sound", "we finally hung the curtains", "the neighbours are renovating",
            "I reorganised the spice rack", "the washing machine flooded the floor", "I'm decluttering the hallway",
            "a pigeon keeps sitting on the balcony", "the landlord fixed the window", "I painted the shelves",
            "the smoke alarm went off while I was cooking",
        ),
        "reply": (
            "Home repairs never end.", "That must feel good.", "Oh dear, what a mess.", "Small wins at home.",
            "Pigeons are persistent.", "A tidy space really helps.",
        ),
    },
    "money": {
        "clause": (
            "I'm trying to stick to a budget", "the electricity bill went up again", "I cancelled two subscriptions",
            "I'm saving up for a new bike", "{name} still owes me for the tickets", "I sold some old books online",
            "rent is due on {day}", "I opened a savings account", "I spent too much at the market",
            "I sorted out my receipts",
        ),
        "reply": (
            "Budgeting is hard but worth it.", "Every little bit helps.", "Bills add up fast.",
            "That's a smart move.", "Saving for something specific keeps it motivating.", "Fair enough.",
        ),
    },
    "pets": {
        "clause": (
            "the cat learned to open the cupboard", "the dog rolled in something awful", "we're fostering a kitten",
            "the rabbit chewed through a cable", "{name} is pet-sitting for us", "the vet says he needs a diet",
            "the puppy slept through the night", "I bought a new scratching post", "the fish tank needs cleaning",
            "the dog barked at the postman for ages",
        ),
        "reply": (
            "Pets keep life interesting.", "Oh no, the cable!", "That's adorable.", "Cats are too clever.",
            "A diet might do him good.", "Give them a pat from me.",
        ),
    },
    "school": {
        "clause": (
            "the kids have a school trip in {month}", "I'm studying for a language exam", "parents' evening was long",
            "my essay is due on {day}", "the teacher sent home a project about volcanoes",
            "I signed up for an evening course", "{name} is struggling with fractions", "the library was full",
            "I finally submitted my assignment", "the school run was chaos",
        ),
        "reply": (
            "Good luck with the studying.", "Projects like that can be fun.", "Deadlines sneak up.",
            "An evening course is a great idea.", "Fractions trip a lot of people up.", "Well done for submitting.",
        ),
    },
}
