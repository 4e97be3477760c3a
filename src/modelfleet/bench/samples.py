"""Sample inputs: a small built-in set of sentences, or one sample per line from a file."""

from __future__ import annotations

from pathlib import Path

from modelfleet.errors import InvalidInput, NotFound

# Varied lengths so text models see realistic padding; plain ASCII so any tokenizer takes them.
BUILTIN_SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Shipping was fast and the package arrived in perfect condition.",
    "What is the capital of Australia?",
    "The model returned an embedding for every sentence in the batch.",
    "I would like to cancel my subscription at the end of this month.",
    "Rain is expected across the northern region tomorrow afternoon.",
    "Can you recommend a good book about distributed systems?",
    "The meeting has been moved to Thursday at ten in the morning.",
    "Latency matters more than throughput for interactive applications.",
    "This product stopped working after two weeks and support never replied.",
    "Please summarize the attached report in three bullet points.",
    "A stitch in time saves nine.",
    "The new release improves start-up time and reduces memory use by a third.",
    "Where can I find the nearest charging station for an electric car?",
    "Customers who bought this item also bought a protective case.",
    "The committee approved the budget after a long discussion about priorities.",
    "Translate 'good morning' into Spanish, French and German.",
    "Our servers handle thousands of requests per second during peak hours.",
    "He played the piano every evening until the neighbours complained.",
    "Is it safe to take ibuprofen together with coffee?",
    "The train to the airport leaves every fifteen minutes from platform two.",
    "Quarterly revenue grew by eight percent compared with the previous year.",
    "Short.",
)

# Question answering (models whose inputs are `question` and `context`): each question answerable
# from its context; two contexts run to a few hundred tokens so windowing shows in the load.
_LONG_CONTEXT = (
    "The observatory stands on a ridge above the town, about 2,400 metres above sea level, where the "
    "air is dry and the sky is dark for most of the year. Its main telescope has a mirror 4.1 metres "
    "across, cast in 1994 and polished for three years before it saw first light in 1998. Astronomers "
    "use it to measure the light of distant galaxies, to follow comets and to search for planets around "
    "nearby stars. A second, smaller telescope is reserved for students from the university, who book "
    "nights a term in advance. Visitors may tour the dome on Saturday afternoons between April and "
    "October; tickets cost eight euros and must be bought online. The road from the town is narrow and "
    "closes after heavy snow, so winter visits are by arrangement only. In 2021 the observatory fitted "
    "solar panels that cover most of its daytime power needs, and a battery bank keeps the instruments "
    "running through the night when clouds are forecast to clear."
)
BUILTIN_QA_PAIRS: tuple[tuple[str, str], ...] = (
    (
        "What is the capital of Australia?",
        "Canberra is the capital of Australia, chosen in 1908 as a compromise.",
    ),
    (
        "How long does shipping take?",
        "Orders ship within two days and usually arrive in three to five working days.",
    ),
    (
        "Who founded the company?",
        "The company was founded in 1976 by two engineers in a garage in California.",
    ),
    ("When is the meeting?", "The meeting has been moved to Thursday at ten in the morning, in room 4B."),
    ("How big is the main mirror?", _LONG_CONTEXT),
    ("When can visitors tour the dome?", _LONG_CONTEXT),
    ("What does the battery bank do?", _LONG_CONTEXT),
    ("What is the boiling point of water?", "At sea level water boils at 100 degrees Celsius."),
)


def load_samples(path: Path | None) -> list[str]:
    """Samples from ``path`` (UTF-8, one per line, blank lines skipped), or the built-in sentences."""
    if path is None:
        return list(BUILTIN_SENTENCES)
    if not path.is_file():
        raise NotFound(f"samples file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"samples file {path} is not UTF-8 text (one sample per line)") from None
    samples = [line.strip() for line in text.splitlines() if line.strip()]
    if not samples:
        raise InvalidInput(
            f"samples file {path} has no samples (one sample per line, blank lines are skipped)"
        )
    return samples
