"""A seeded generator of support-ticket text for the drift tests: month 1 (three product lines)
and month 2 (the same, plus a new product line with its own vocabulary), written with the same
phrasing so only the product line tells them apart."""

from __future__ import annotations

import random

GREETINGS = ["Hi,", "Hello team,", "Good morning,", "Hey support,", "Dear support,", ""]
CLOSINGS = ["Thanks", "Cheers", "Regards", "Thank you in advance", "Best", ""]
OPENERS = ["I have a problem with my {p}", "My {p} {s}", "Since the update my {p} {s}",
           "Not sure who to ask, but my {p} {s}", "Urgent: the {p} {s}", "Quick question about the {p}"]
DETAILS = ["It started {when}.", "I already tried restarting it.", "We have {n} of them in the office.",
           "Order number {o} if that helps.", "Can you refund me or send a replacement?",
           "This is the {n}th time I write about this.", "Please call me back.", "The app shows error {o}.",
           "It worked fine {when}.", "My plan is Business."]
WHEN = ["yesterday", "last week", "two days ago", "this morning", "after the firmware update", "since Monday"]
LINES = {
    "camera": (["Aria Cam", "Aria Cam Pro", "outdoor camera"],
               ["stops recording at night", "shows a black screen", "loses wifi every hour", "has blurry video"]),
    "doorbell": (["Tala Doorbell", "video doorbell", "Tala chime"],
                 ["does not ring", "chime stays silent", "battery drains in a day", "rings twice"]),
    "hub": (["Lumen hub", "smart hub", "Lumen bridge"],
            ["goes offline nightly", "drops the zigbee sensors", "will not pair", "blinks red"]),
}
NEW_LINE = ("thermostat", (["Nimbus Thermostat", "Nimbus heat pump controller", "Nimbus radiator valve"],
                           ["overheats the boiler", "ignores the heating schedule", "reports wrong humidity",
                            "calibration fails on the radiator"]))


def ticket(rng: random.Random, *, new_share: float = 0.0) -> str:
    if rng.random() < new_share:
        products, symptoms = NEW_LINE[1]
    else:
        products, symptoms = LINES[rng.choice(sorted(LINES))]
    parts = [rng.choice(GREETINGS),
             rng.choice(OPENERS).format(p=rng.choice(products), s=rng.choice(symptoms)) + "."]
    for _ in range(rng.choice([0, 1, 1, 2, 3, 4])):
        parts.append(rng.choice(DETAILS).format(when=rng.choice(WHEN), n=rng.randint(2, 9),
                                                o=f"{rng.randint(10000, 99999)}"))
    parts.append(rng.choice(CLOSINGS))
    return "\n".join(p for p in parts if p)


def tickets(n: int, *, seed: int, new_share: float = 0.0) -> list[str]:
    rng = random.Random(seed)
    return [ticket(rng, new_share=new_share) for _ in range(n)]
