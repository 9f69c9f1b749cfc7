"""How customers describe each kind of issue: phrase tables and one paragraph writer per kind.

Each writer turns an issue's facts into a paragraph that states every fact the label depends
on (a date or a number of days, the shipping method when the customer gives one, the firmware
or app version when they quote one, the platform, the Wi-Fi band), in varied wording, with
the personal data real tickets carry (order ids, card numbers, addresses), each one counted
through ``Ctx.mark``.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from tunesmith.sample.triage_people import (
    Customer,
    make_address,
    make_card,
    make_email,
    make_order_id,
)
from tunesmith.sample.triage_policy import PRODUCTS, Issue


@dataclass
class Ctx:
    """What a paragraph writer needs: the random stream, the customer, the ticket date, and a
    tally of the personal data planted so far (by entity type, with the exact values)."""

    rng: random.Random
    customer: Customer
    created: date
    pii: Counter[str] = field(default_factory=Counter)
    planted: list[tuple[str, str]] = field(default_factory=list)
    vocab: Vocabulary | None = None  # None: month 1's products and symptoms

    @property
    def words(self) -> Vocabulary:
        return self.vocab or MONTH_ONE_VOCAB

    def mark(self, kind: str, value: str) -> str:
        self.pii[kind] += 1
        self.planted.append((kind, value))
        return value

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return self.rng.choice(options)


NICKNAMES: dict[str, tuple[str, ...]] = {
    "lumen_hub": ("hub", "Lumen hub", "smart home hub", "Lumen"),
    "aria_cam": ("camera", "cam", "Aria camera", "security camera"),
    "breeze_thermostat": ("thermostat", "Breeze", "Breeze thermostat"),
    "tala_doorbell": ("doorbell", "video doorbell", "Tala"),
    "pulse_plug": ("smart plug", "plug", "Pulse plug"),
    "halcyon_app": ("app", "Halcyon app", "phone app"),
    "cloud_plus": ("Cloud Plus", "Cloud Plus plan", "Cloud Plus subscription"),
    "cloud_pro": ("Cloud Pro", "Cloud Pro plan", "Cloud Pro subscription"),
}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_CURRENCY = {"en_GB": "£", "es_ES": "€", "de_DE": "€", "fr_FR": "€"}


@dataclass(frozen=True)
class Vocabulary:
    """The words customers use for the catalogue: product names, nicknames and how they describe
    each symptom. A new product line (the simulated second month) brings its own."""

    names: Mapping[str, str]  # product key -> catalogue name
    nicknames: Mapping[str, tuple[str, ...]]
    symptoms: Mapping[str, tuple[str, ...]]  # symptom key -> phrasings


def product_name(ctx: Ctx, key: str) -> str:
    """The product's catalogue name or one of the nicknames customers use."""
    if ctx.rng.random() < 0.5:
        return ctx.words.names[key]
    return ctx.pick(ctx.words.nicknames[key])


def product_ref(ctx: Ctx, key: str) -> str:
    return f"{ctx.pick(('my', 'my', 'the', 'our'))} {product_name(ctx, key)}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def format_date(rng: random.Random, day: date, this_year: int) -> str:
    """A date the way customers write it; never a bare numeric day/month (ambiguous)."""
    month = _MONTHS[day.month - 1]
    style = rng.randrange(5)
    if style == 4:
        return day.isoformat()
    text = (f"{month} {day.day}", f"{day.day} {month}", f"{month[:3]} {ordinal(day.day)}",
            f"the {ordinal(day.day)} of {month}")[style]
    return text if day.year == this_year else f"{text} {day.year}"


def when(ctx: Ctx, days: int) -> str:
    """A moment `days` before the ticket date: "yesterday", "3 weeks ago", "on March 3"."""
    roll = ctx.rng.random()
    if days == 1 and roll < 0.6:
        return "yesterday"
    if days % 7 == 0 and days <= 56 and roll < 0.6:
        weeks = days // 7
        return "a week ago" if weeks == 1 else f"{ctx.pick((str(weeks), _NUMBER_WORDS[weeks]))} weeks ago"
    if roll < 0.45:
        return f"{days} days ago"
    return "on " + format_date(ctx.rng, ctx.created - timedelta(days=days), ctx.created.year)


def money(ctx: Ctx, low: float, high: float) -> str:
    symbol = _CURRENCY.get(ctx.customer.locale, "$")
    return f"{symbol}{ctx.rng.uniform(low, high):.2f}"


def order(ctx: Ctx) -> str:
    return ctx.mark("ORDER_ID", make_order_id(ctx.rng))


def card(ctx: Ctx) -> str:
    """Most customers quote the last four digits; some paste the whole number."""
    if ctx.rng.random() < 0.6:
        return ctx.mark("CREDIT_CARD", make_card(ctx.rng))
    return f"ending in {ctx.rng.randrange(1000, 10000)}"



Slot = str | Callable[[], str]


def fill(ctx: Ctx, templates: tuple[str, ...], **slots: Slot) -> str:
    """Pick a template and fill it. Callable slots run only when the chosen template uses
    them, so personal data is planted (and counted) only where it appears in the text."""
    template = ctx.pick(templates)
    used = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    values = {k: (v() if callable(v) else v) for k, v in slots.items() if k in used}
    return template.format(**values)


# --------------------------------------------------------------------------- security
_CITIES_FAR = ("Jakarta", "Minsk", "Lagos", "Lima", "Hanoi", "Caracas", "Bucharest")
_FAKE_SENDERS = ("support@halcyon-home-billing.com", "security@halcyon-verify.net",
                 "noreply@halcyonhome.help")
TEMPLATES: dict[str, tuple[str, ...]] = {
    "account_compromised": (
        "Someone got into my account. I got an email saying my password was changed and it wasn't me.",
        "There is a sign-in from {city} on my account that I don't recognise, and a device I never added showed up in my home.",
        "I think my account has been hacked: my cameras were renamed overnight and there's a new user I didn't invite.",
        "No rush, but I noticed a login from {city} and the recovery email on my account was changed. I've never been there.",
    ),
    "unrecognised_charge": (
        "There's a charge of {amount} from Halcyon on my card {card} that I did not make.",
        "I don't recognise a {amount} payment to HALCYON*HOME on my statement. I never authorised it and I don't have a subscription.",
        "My bank shows {amount} from you {when}. I have no idea what it is, I didn't buy anything.",
    ),
    "phishing_report": (
        "I got an email from {sender} asking me to confirm my password through a link. Is this really you?",
        "Got a text saying my Halcyon account will be closed unless I click a link and enter my card details. Looks like a scam, just letting you know.",
        "Heads up, someone is sending fake Halcyon invoices from {sender} with a login link.",
    ),
    # ----------------------------------------------------------------------- billing
    "duplicate_charge": (
        "I was charged twice for {sub} this month: two payments of {amount} on the same day.",
        "My card {card} was billed {amount} two times for order {order}.",
        "Double charge on my account, {amount} x2 for {sub}. I only have one subscription.",
        "You took {amount} for {sub} and then the same amount again a minute later.",
    ),
    "wrong_amount": (
        "I was charged {wrong} but {sub} is supposed to be {amount}.",
        "After switching to {sub} my invoice shows {wrong} instead of {amount}. Please fix.",
        "The renewal for {sub} came out at {wrong}, the price on your website is {amount}.",
    ),
    "invoice_request": (
        "Could you send me a VAT invoice for order {order}? I need it for my accountant.",
        "Where can I download receipts for my subscription payments? I need them for expenses.",
        "Please send an invoice with our company name on it for order {order}.",
    ),
    "plan_change": (
        "I'd like to switch from {sub} to the other Cloud plan starting next month.",
        "How do I downgrade {sub}? I don't need that much video history anymore.",
        "Can I move {sub} to yearly billing instead of monthly?",
    ),
    # ----------------------------------------------------------------------- refunds
    "hardware_return": (
        "I'd like to return {item}. It arrived {when}. {reason}",
        "Can I get my money back for {item}? I received it {when}. {reason}",
        "Refund please for {item} from order {order}, delivered {when}. {reason}",
        "I want to send back {item} (order {order}). {reason} It was delivered {when}.",
        "{Item} came {when}. {reason} Please put the money back on my card {card}.",
    ),
    "subscription_refund": (
        "My {sub} renewed {when} and I didn't want it to. Can I get a refund?",
        "I was charged for another year of {sub} {when}. I forgot to cancel, please refund it.",
        "Please cancel {sub} and refund the last payment ({amount}, taken {when}).",
        "{sub} renewed {when} without asking me. Refund it to my card {card} please.",
    ),
    # ----------------------------------------------------------------------- shipping
    "late_delivery": (
        "Where is my order {order}? I ordered it {when}{how} and it still hasn't arrived.",
        "Order {order} was placed {when}{how}, and the tracking page hasn't changed since.",
        "Still waiting for my {name}. I ordered {when}{how}. Any news?",
    ),
    "damaged_delivery": (
        "{Item} arrived with the box crushed and the casing cracked. Please send a new one to {address}.",
        "Order {order} came damaged, there's a big crack across the front of {item}.",
        "The parcel was soaking wet and {item} inside is dented. I'm at {address}.",
    ),
    "address_change": (
        "I need to change the delivery address for order {order}. New address: {new_address}.",
        "We moved house, can you ship order {order} to {new_address} instead?",
        "Please update my shipping address to {new_address} before my order goes out.",
    ),
    # ----------------------------------------------------------------------- account
    "login_problem": (
        "I can't log in. It says my password is wrong but I'm sure it's right.",
        "I forgot my password and the reset email never arrives. My login is {email}.",
        "The app locked me out after too many attempts and now I can't get back in.",
    ),
    "lost_2fa": (
        "I got a new phone and now I can't get the two-factor codes. Can you turn off 2FA on my account ({email})?",
        "I lost my phone with the authenticator app on it, so I'm locked out. Please reset my 2-step verification.",
        "My 2FA codes go to an old number I don't have anymore. Can you remove two-factor so I can log in?",
    ),
    "email_change": (
        "I'd like to change the email I log in with from {email} to {new_email}.",
        "Please update my account email to {new_email}, I'm closing the old mailbox.",
    ),
    # ----------------------------------------------------------------------- general
    "product_question": (
        "Does {item} work with {platform}?",
        "Is the {name} OK to use outdoors? Thinking about mounting it by the garage.",
        "Can I share access to {item} with my partner without giving them my password?",
        "Quick question: how many {name}s can one account have?",
    ),
    "feature_request": (
        "It would be great if the app had a dark mode.",
        "Please add Matter support, I'd like to use {platform} with everything.",
        "Any plans to offer more than 60 days of video history?",
    ),
    "feedback": (
        "Just wanted to say {item} is brilliant, setup took five minutes.",
        "The person who helped me last week was fantastic, thank you!",
        "Love {item}, but the instructions in the box could be clearer.",
    ),
}
_PLATFORMS = ("Google Home", "Alexa", "Apple HomeKit", "Home Assistant", "SmartThings")
_DEFECTIVE = (
    "It stopped working after a few days.", "It keeps rebooting every few minutes.",
    "It's faulty, the status light never comes on properly.", "It's broken, it disconnects constantly.",
)
_UNWANTED = (
    "I changed my mind.", "It isn't compatible with my setup.", "I bought the wrong model.",
    "My landlord won't let me install it.", "We got two as gifts.", "It's just not for us.",
)
_METHOD_WORDS = {
    "standard": ("standard shipping", "standard delivery", "the normal free shipping"),
    "express": ("express shipping", "express delivery", "paid extra for express"),
    "international": ("international shipping", "international delivery"),
}


def _slots(ctx: Ctx, issue: Issue) -> dict[str, Slot]:
    """Every slot a template may use, lazily where the value is personal data."""
    product = issue.product or "lumen_hub"
    item = product_ref(ctx, product)
    slots: dict[str, Slot] = {
        "item": item, "Item": item[0].upper() + item[1:], "name": product_name(ctx, product),
        "sub": product_name(ctx, product), "amount": money(ctx, 4, 120),
        "wrong": money(ctx, 121, 300), "city": ctx.pick(_CITIES_FAR),
        "sender": ctx.pick(_FAKE_SENDERS), "platform": ctx.pick(_PLATFORMS),
        "when": when(ctx, issue.days or ctx.rng.randint(1, 20)),
        "reason": ctx.pick(_DEFECTIVE if issue.defective else _UNWANTED),
        "how": f" with {ctx.pick(_METHOD_WORDS[issue.method])}" if issue.method else "",
        "card": lambda: card(ctx), "order": lambda: order(ctx),
        "email": lambda: ctx.mark("EMAIL", ctx.customer.email),
        "address": lambda: ctx.mark("STREET_ADDRESS", ctx.customer.address),
    }
    slots["new_address"] = lambda: ctx.mark(
        "STREET_ADDRESS", make_address(ctx.rng, ctx.customer.locale))
    slots["new_email"] = lambda: ctx.mark(
        "EMAIL", make_email(ctx.rng, ctx.customer.first, ctx.customer.last, "proton.me"))
    return slots


def describe_issue(ctx: Ctx, issue: Issue) -> str:
    """One paragraph raising `issue`, stating every fact its label depends on."""
    if issue.kind == "device_fault":
        return describe_fault(ctx, issue)
    return fill(ctx, TEMPLATES[issue.kind], **_slots(ctx, issue))


# --------------------------------------------------------------------------- device faults
SYMPTOM_PHRASES: dict[str, tuple[str, ...]] = {
    "hub_offline_nightly": (
        "every night around 2 or 3 am all my Zigbee sensors go offline and come back in the morning",
        "my devices drop off overnight, every single night, and the log says they disconnected at about 2:15 am",
    ),
    "hub_offline_microwave": (
        "my sensors drop off whenever the microwave is running in the kitchen",
        "devices go offline for a minute every time someone uses the microwave",
    ),
    "hub_no_pairing": (
        "it won't pair any new devices, the LED just blinks red",
        "I can't add my new door sensor, pairing times out every time",
    ),
    "hub_dead": ("it won't turn on at all, no lights, nothing",
                 "it's completely dead, even with a different power adapter"),
    "hub_hot": ("it gets really hot and there's a burning plastic smell",
                "the case is too hot to touch and smells like something is melting"),
    "cam_pink_night": ("the night vision picture has gone pink",
                       "at night the image has a weird purple tint",
                       "all the night-mode footage is pinkish"),
    "cam_pink_day": ("during the day the colours look pink and washed out (night vision looks fine)",
                     "daytime video has a pink tint, the night picture is normal"),
    "cam_late_alerts": ("motion alerts arrive 5-10 minutes after the event",
                        "motion notifications are really delayed, sometimes by ten minutes"),
    "cam_no_wifi": ("it won't connect to wifi at all anymore, it's stuck on the setup screen",
                    "it's permanently offline and won't rejoin the network no matter what"),
    "cam_battery_swell": ("the battery has swollen and the case is splitting open",
                          "the battery pack is bulging out of the housing"),
    "thermo_schedule_reset": ("after a power cut my whole weekly schedule was wiped",
                              "every time the power goes out the schedule resets to default"),
    "thermo_wrong_temp": ("it reads 3 degrees higher than the actual room temperature",
                          "the temperature it shows is way off compared to my other thermometer"),
    "thermo_blank": ("the screen is blank and it doesn't respond, the heating won't come on",
                     "it's totally dead, no display at all"),
    "thermo_sparks": ("I saw a spark and heard crackling from the wall plate",
                      "there was a small spark and a burning smell when it switched the boiler on"),
    "bell_chime_5ghz": ("the indoor chime doesn't ring since I moved it to our 5 GHz wifi",
                        "the chime stays silent when someone presses the button (it's on the 5GHz network)"),
    "bell_chime_24ghz": ("the chime doesn't ring, and it's on the 2.4 GHz network",
                         "the indoor chime is silent even though it's connected to 2.4GHz"),
    "bell_dead": ("it doesn't power on at all", "it's completely dead, no light ring"),
    "plug_zero_watts": ("the energy usage shows 0 W since the clocks changed",
                        "ever since daylight saving time the power reading is stuck at zero"),
    "plug_random_toggle": ("it switches itself on and off at random",
                           "it clicks on and off in the middle of the night on its own"),
    "plug_scorch": ("there are scorch marks around it and it smells burnt",
                    "it got so hot the plastic melted a bit"),
    "app_crash_android": ("it crashes on my Android phone whenever I open live view",
                          "on my Pixel (Android) it closes as soon as I tap a camera's live feed"),
    "app_crash_iphone": ("it crashes on my iPhone whenever I open live view",
                         "on iOS it quits as soon as I tap a camera's live feed"),
    "app_no_notifications": ("I stopped getting push notifications",
                             "there are no alerts on my phone anymore"),
}
_FAULT_TEMPLATES = (
    "Problem with {item}: {symptom}.",
    "{Item} is acting up, {symptom}.",
    "{Symptom}. This is {item} in the living room.",
    "Quick one about {item}. {Symptom}.",
)
_TRIED = ("", "", " I've already restarted it.", " Reset it twice, no change.",
          " We've had it since last year.", " Tried unplugging it for a minute, didn't help.")


def _version_phrase(ctx: Ctx, issue: Issue) -> str:
    word = "app version" if issue.product == "halcyon_app" else ctx.pick(("firmware", "fw"))
    if issue.version is None:
        return ""
    if issue.version == "latest":
        return ctx.pick((" I'm on the latest version.", " All updates are installed.",
                         f" It's on the newest {word}."))
    return ctx.pick((f" It's on {word} {issue.version}.", f" ({word} {issue.version})",
                     f" Running {word} {issue.version}."))


def describe_fault(ctx: Ctx, issue: Issue) -> str:
    symptom = ctx.pick(ctx.words.symptoms[issue.symptom or ""])
    item = product_ref(ctx, issue.product or "lumen_hub")
    text = ctx.pick(_FAULT_TEMPLATES).format(
        item=item, Item=item[0].upper() + item[1:], symptom=symptom,
        Symptom=symptom[0].upper() + symptom[1:],
    )
    return text + _version_phrase(ctx, issue) + ctx.pick(_TRIED)


MONTH_ONE_VOCAB = Vocabulary({k: p.name for k, p in PRODUCTS.items()}, NICKNAMES, SYMPTOM_PHRASES)
