"""Fixed inputs the build runs through both the source framework and the artifact to compare them.

The sentences are fixed (never random) so the verification figures of two builds can be compared.
They vary in length (one word to a long paragraph past the 128-token mark), language, punctuation,
digits and code, and include related pairs so a reader can see similarity behave sensibly.
"""

from __future__ import annotations

VERIFICATION_SENTENCES: tuple[str, ...] = (
    "Hello!",
    "Thanks.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing the violin.",
    "Two men pushed carts through the woods.",
    "A monkey is playing drums.",
    "The cat sits outside on the warm stone wall.",
    "The new movie is awesome and everyone should see it.",
    "Do you know where the nearest train station is?",
    "How do I reset my password if I no longer have access to my email?",
    "The weather forecast says it will rain heavily tomorrow afternoon.",
    "Interest rates rose by a quarter of a percentage point on Wednesday.",
    "Stocks fell sharply after the central bank surprised investors.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is the powerhouse of the cell.",
    "Quantum computers use qubits, which can exist in superpositions of states.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le chat dort sur le canapé depuis ce matin.",
    "¿Dónde está la biblioteca?",
    "Order #48213 shipped on 2024-03-05 and should arrive within 3-5 business days.",
    "def add(a, b):\n    return a + b",
    "SELECT name, price FROM products WHERE price > 100 ORDER BY price DESC;",
    "ERROR 503: upstream service unavailable, retry after 30 seconds",
    "lol that was sooo funny 😂😂",
    "I am not sure whether I should accept the job offer in another city or stay here.",
    "The patient reported mild chest pain radiating to the left arm for two hours.",
    "Customers who bought this item also bought batteries, a charger and a protective case.",
    (
        "Serving many machine learning models at low latency requires careful batching, because a "
        "single request rarely fills the hardware, while waiting too long for a batch to fill adds "
        "delay that every request in the batch pays. A good server closes a batch either when it is "
        "full or when a short deadline after the first request passes, keeps a bounded queue so that "
        "overload turns into fast rejections rather than growing latency, and reports the tail of the "
        "latency distribution, not just the average, because the slowest requests are the ones users "
        "remember and the ones service level objectives are written about."
    ),
    (
        "In the beginning the Universe was created. This has made a lot of people very angry and been "
        "widely regarded as a bad move. Many were increasingly of the opinion that they had all made a "
        "big mistake in coming down from the trees in the first place, and some said that even the trees "
        "had been a bad move, and that no one should ever have left the oceans. Far out in the uncharted "
        "backwaters of the unfashionable end of the western spiral arm of the Galaxy lies a small "
        "unregarded yellow sun, orbited at a distance of roughly ninety-two million miles by an utterly "
        "insignificant little blue green planet whose ape-descended life forms are so amazingly "
        "primitive that they still think digital watches are a pretty neat idea."
    ),
)

# Used only to choose an int8 quantization recipe, never to verify, so the verification figures are
# measured on inputs the recipe choice did not see.
CALIBRATION_SENTENCES: tuple[str, ...] = (
    "Yes.",
    "Good morning",
    "Where is my parcel?",
    "The children played football in the park until it got dark.",
    "A dog runs across the snowy field.",
    "Our quarterly revenue grew by twelve percent compared to last year.",
    "Please restart the router and try connecting again.",
    "Il pleut des cordes aujourd'hui.",
    "for i in range(10): print(i)",
    "The enzyme lowers the activation energy of the reaction.",
    "Refunds are processed within 14 days of receiving the returned item.",
    "What is the capital of Australia?",
    (
        "The committee reviewed the proposal in detail, weighing the expected benefits for the "
        "community against the costs of construction, the disruption to local traffic during the two "
        "years of work, and the long-term maintenance budget the city would need to set aside."
    ),
    "ok",
    "Battery drains fast after the latest update, phone gets hot while charging.",
    "She sings beautifully.",
)

_LONG_HISTORY = (
    "The city began as a small river crossing where traders exchanged salt, grain and wool. "
    "In the twelfth century a stone bridge replaced the ferry, and a market grew on the northern bank. "
    "The first charter, granted in 1189, allowed the town to hold a weekly fair and to elect a mayor. "
    "Over the next two hundred years the wool trade made the merchants rich; they built the guild hall, "
    "paved the main street and founded a grammar school that still teaches about nine hundred pupils. "
    "A fire in 1666 destroyed most of the timber houses near the harbour, and the council ordered that "
    "new buildings be made of brick. The railway arrived in 1841, the population doubled within thirty "
    "years, and cotton mills lined the canal until the last of them closed in 1979. Today the old mills "
    "hold flats, a museum of industry and a university library with more than two million books. "
    "The museum is open every day except Monday, from ten in the morning until five in the afternoon, "
    "and entry is free for children under sixteen. Visitors can reach it by the number 42 bus from the "
    "central station, a journey of about twelve minutes, or walk along the canal towpath in half an hour."
)
_LONG_SCIENCE = (
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light into "
    "chemical energy. It takes place mainly in the chloroplasts of leaf cells, where the pigment "
    "chlorophyll absorbs red and blue light and reflects green, which is why leaves look green. In the "
    "light-dependent reactions, water molecules are split, releasing oxygen as a by-product and producing "
    "the energy carriers ATP and NADPH. In the Calvin cycle, which does not need light directly, the enzyme "
    "RuBisCO fixes carbon dioxide from the air into a three-carbon sugar. Plants use these sugars to build "
    "cellulose for their cell walls and starch for storage. Scientists estimate that photosynthesis captures "
    "about one hundred and thirty terawatts of energy worldwide, roughly six times the power that human "
    "civilisation uses. Rising carbon dioxide levels can speed up photosynthesis in some crops, but heat "
    "and drought often cancel the gain. Researchers in several countries are trying to engineer a faster "
    "version of RuBisCO, because the natural enzyme is slow and often grabs oxygen instead of carbon dioxide, "
    "a wasteful side reaction called photorespiration that can cost a crop a quarter of its yield."
)

# (question, context) pairs for question answering: short contexts and long ones that a model with
# 128 to 384 positions splits into several overlapping windows, so the stride path is compared too.
VERIFICATION_QA: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    ("Who wrote the novel?", "The novel was written by Jane Austen and published in 1813."),
    (
        "How tall is the tower?",
        "The tower is 324 metres tall, about the same height as an 81-storey building.",
    ),
    (
        "When does the shop open?",
        "The shop opens at 9 a.m. on weekdays and at 10 a.m. on Saturdays; it is closed on Sundays.",
    ),
    (
        "What colour is the sky on Mars?",
        "During the day the Martian sky is a butterscotch colour, while sunsets there look blue.",
    ),
    ("When was the first charter granted?", _LONG_HISTORY),
    ("Which bus goes to the museum?", _LONG_HISTORY),
    ("How much energy does photosynthesis capture?", _LONG_SCIENCE),
    ("What is photorespiration?", _LONG_SCIENCE),
    (
        "Où se trouve la tour Eiffel ?",
        "La tour Eiffel se trouve à Paris, sur le Champ-de-Mars, près de la Seine.",
    ),
)
