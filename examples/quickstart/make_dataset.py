"""Regenerate data/reviews.jsonl, the quickstart's small sentiment dataset (written for this project).

    python examples/quickstart/make_dataset.py

Deterministic: a fixed seed, sorted output. It includes a handful of deliberate near-duplicates
(same text up to case, whitespace and Unicode form) so the split's dedupe and leakage report have work.
"""

import json
import random
import unicodedata
from datetime import date, timedelta
from pathlib import Path

PRODUCTS = ["kettle", "headphones", "backpack", "desk lamp", "coffee grinder", "rain jacket", "keyboard",
            "water bottle", "phone case", "blender", "hiking boots", "monitor stand", "e-reader", "toaster"]
POSITIVE = ["works perfectly and feels solid", "exceeded what I expected for the price", "is quiet, quick and easy to clean",
            "arrived early and looks great", "has held up well after months of daily use", "is the best one I have owned"]
NEGATIVE = ["stopped working after two weeks", "feels cheap and rattles", "arrived scratched and missing a part",
            "is much louder than advertised", "broke the first time I used it", "was a waste of money"]
NEUTRAL = ["does the job, nothing more", "is fine but the colour is duller than the photos",
           "works as described, average build", "is okay for occasional use", "is neither great nor bad"]
OPENERS = ["Honestly, the", "The", "My new", "This", "Our"]


def main() -> None:
    rng = random.Random(20261124)
    rows = []
    start = date(2024, 1, 1)
    for index in range(300):
        label = rng.choice(["positive", "positive", "negative", "neutral"])
        phrase = rng.choice({"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}[label])
        text = f"{rng.choice(OPENERS)} {rng.choice(PRODUCTS)} {phrase}."
        rows.append({
            "id": f"r{index:04d}",
            "prompt": f"Classify the sentiment of this review: {text}",
            "response": label,
            "label": label,
            "date": (start + timedelta(days=rng.randrange(0, 700))).isoformat(),
        })
    # Near-duplicates: the same review re-submitted with other case, spacing or Unicode normal form.
    for offset, source in enumerate([3, 17, 42, 99, 150, 201, 250]):
        original = rows[source]
        variants = [str.upper, lambda s: "  ".join(s.split(" ")), lambda s: unicodedata.normalize("NFD", s + " café")]
        text = variants[offset % 3](original["prompt"])
        if offset % 3 == 2:
            original["prompt"] = unicodedata.normalize("NFC", original["prompt"] + " café")
        rows.append({**original, "id": f"d{offset:04d}", "prompt": text})
    out = Path(__file__).parent / "data" / "reviews.jsonl"
    out.write_text("".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
