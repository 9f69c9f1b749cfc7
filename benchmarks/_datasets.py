"""Seeded task generators for ``bench_defaults.py``: two projects besides the sample one.

``intents``
    A many-class label task: short customer messages to a card/banking app, each labelled
    with one of 40 snake_case intents (``card_arrival``, ``lost_or_stolen_card``,
    ``exchange_rate``, ...). Every intent has several paraphrase templates with slot fillers
    (amounts in several spellings, currencies, dates, merchants, countries), an optional
    opener, context sentence and sign-off, and light noise (typos, all lowercase, a missing
    final full stop). Written as a CSV with the columns ``text,category``.

``summaries``
    A free-text task: a generated support ticket (greeting, who the customer is, what they
    bought, what is wrong, what they want, sometimes an aside and a name) and its one-sentence
    summary ``Customer <who, no name> reports <issue> with <product>; wants <resolution>.``,
    built from the generator's ground truth, so the reference is exact. Written as OpenAI chat
    JSONL (system, user, assistant).

The same seed gives the same records (``random.Random``, no global state). A message that
normalises to an earlier one is drawn again, so the prepare stage's exact dedup has nothing to
remove; its near dedup (5-word shingles, Jaccard 0.8) rarely fires because every template
carries at least one slot and the optional sentences vary.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- slot fillers
MERCHANTS = (
    "Amazon", "Uber", "Tesco", "Netflix", "Spotify", "Zara", "IKEA", "Lidl", "Starbucks",
    "Booking.com", "Airbnb", "Steam", "eBay", "Deliveroo", "Ryanair", "H&M", "Apple Store",
    "Shell", "McDonald's", "Primark", "Sainsbury's", "Decathlon", "Etsy", "Aldi",
)
CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CHF", "PLN", "SEK", "AUD", "CAD", "MXN", "TRY", "CZK")
CURRENCY_WORDS = {"EUR": "euros", "USD": "dollars", "GBP": "pounds", "JPY": "yen", "CHF": "francs",
                  "PLN": "zloty", "SEK": "kronor", "AUD": "Australian dollars",
                  "CAD": "Canadian dollars", "MXN": "pesos", "TRY": "lira", "CZK": "koruna"}
SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}
COUNTRIES = (
    "Spain", "Japan", "Mexico", "Portugal", "Thailand", "the US", "Canada", "Poland", "Turkey",
    "Greece", "Italy", "Morocco", "Vietnam", "Brazil", "Croatia", "Iceland", "Kenya", "Peru",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
DEVICES = ("iPhone", "Android phone", "Pixel", "Samsung phone", "Apple Watch", "tablet")
BANKS = ("my old bank", "my savings account", "my partner's account", "Barclays", "HSBC",
         "Santander", "my employer", "a friend's account", "Monzo", "my credit union")
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _amount(rng: random.Random) -> str:
    cur = rng.choice(CURRENCIES[:6] if rng.random() < 0.8 else CURRENCIES)
    value = rng.choice((rng.randint(5, 99), rng.randint(100, 2500), round(rng.uniform(1, 300), 2)))
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    style = rng.random()
    if cur in SYMBOLS and style < 0.45:
        return f"{SYMBOLS[cur]}{text}"
    if style < 0.75:
        return f"{text} {cur}"
    return f"{text} {CURRENCY_WORDS[cur]}"


def _date(rng: random.Random) -> str:
    return rng.choice((
        "yesterday", "today", "this morning", "last night", "last week", "two days ago",
        f"on {rng.choice(WEEKDAYS)}", f"last {rng.choice(WEEKDAYS)}",
        f"on {rng.randint(1, 28)} {rng.choice(MONTHS)}", f"on {rng.choice(MONTHS)} {rng.randint(1, 28)}",
        f"on {rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}", f"{rng.choice(NUMBER_WORDS)} days ago",
    ))


def _fillers(rng: random.Random) -> dict[str, str]:
    cur_a, cur_b = rng.sample(CURRENCIES, 2)
    return {
        "amount": _amount(rng), "amount2": _amount(rng), "merchant": rng.choice(MERCHANTS),
        "currency": cur_a, "currency2": cur_b, "date": _date(rng), "country": rng.choice(COUNTRIES),
        "days": str(rng.randint(2, 14)), "device": rng.choice(DEVICES), "bank": rng.choice(BANKS),
        "last4": f"{rng.randint(0, 9999):04d}", "years": str(rng.randint(2, 12)),
        "weekday": rng.choice(WEEKDAYS), "times": rng.choice(("twice", "three times", "again")),
    }


# --------------------------------------------------------------------------- intents
# Forty intents, each with paraphrase templates; {slots} are filled from _fillers.
INTENTS: dict[str, tuple[str, ...]] = {
    "card_arrival": (
        "I ordered a new card {days} days ago and it still hasn't arrived.",
        "When will my card get here? I applied for it {date}.",
        "How long does delivery of the card take to {country}?",
        "My card was supposed to arrive {date} but the mailbox is still empty.",
        "Is there a way to track the card you posted to me {date}?",
    ),
    "card_activation": (
        "My new card came {date}, how do I activate it?",
        "I can't get the card to activate in the app on my {device}.",
        "What are the steps to switch on the card that arrived {date}?",
        "The activation screen keeps spinning on my {device}, what now?",
        "Do I need to make a purchase first to activate the card? I want to use it at {merchant}.",
    ),
    "lost_or_stolen_card": (
        "I lost my card {date}, please block it.",
        "Someone stole my wallet in {country} {date} with the card inside.",
        "My card ending {last4} is missing, I think it was stolen at {merchant}.",
        "I can't find my card anywhere since {date}. What should I do?",
        "Help, my bag was taken {date} and my card ending {last4} was in it.",
    ),
    "card_payment_declined": (
        "My card was declined at {merchant} {date} even though I have money.",
        "Why did my payment of {amount} at {merchant} get rejected?",
        "Card keeps getting declined when I try to pay {amount} online.",
        "The terminal at {merchant} said declined {date}, what's wrong with my card?",
        "I tried to pay {amount} in {country} and the card was refused.",
    ),
    "card_payment_fee_charged": (
        "Why was I charged an extra fee on my {amount} card payment at {merchant}?",
        "There's a fee on a purchase I made {date} at {merchant}, I didn't expect that.",
        "I paid {amount} by card in {country} and got a fee on top, why?",
        "What is this card payment fee next to my {merchant} purchase?",
        "You charged me a fee for paying by card {date}, I thought card payments were free.",
    ),
    "exchange_rate": (
        "What exchange rate do you use for {currency} to {currency2}?",
        "How much {currency2} would I get for {amount}?",
        "Is your {currency} rate the live market rate?",
        "I'm going to {country} soon, what's the rate for {currency2} today?",
        "Where can I see the current exchange rate before I convert {amount}?",
    ),
    "exchange_charge": (
        "Why was I charged extra when exchanging {amount} into {currency2}?",
        "Is there a fee for exchanging {currency} on a {weekday}?",
        "I exchanged money {date} and there was a charge I didn't expect.",
        "How much do you charge to convert {currency} to {currency2}?",
        "Converting {amount} cost me more than the quoted rate, is there a hidden fee?",
    ),
    "top_up_failed": (
        "My top-up of {amount} failed {date}, what happened?",
        "I tried to add {amount} to my account but it says top up failed.",
        "Top up from {bank} keeps failing, can you check?",
        "Why did my top up get rejected {date}? I tried to load {amount}.",
        "The app shows an error every time I top up from my card ending {last4}.",
    ),
    "top_up_pending": (
        "My top up of {amount} has been pending since {date}.",
        "How long does a top up stay pending? I added {amount} {date}.",
        "The money I topped up from {bank} is still pending.",
        "Top-up shows as pending for {days} days now, is that normal?",
        "I loaded {amount} {date} and it's stuck on pending.",
    ),
    "top_up_by_card": (
        "Can I top up my account with a debit card from {bank}?",
        "How do I add money using my other card ending {last4}?",
        "Which cards can I use to top up? I want to add {amount}.",
        "Is it possible to top up by card from {country}?",
        "I want to load {amount} with my credit card, how?",
    ),
    "transfer_not_received_by_recipient": (
        "I sent {amount} to a friend {date} and they still haven't got it.",
        "My transfer to {bank} shows complete but the recipient has nothing.",
        "The person I paid {amount} says the money never arrived.",
        "I transferred money to {country} {date} and it hasn't reached the other account.",
        "My landlord didn't receive the {amount} I sent {date}.",
    ),
    "pending_transfer": (
        "My transfer of {amount} has been pending since {date}.",
        "Why is the transfer to {bank} still pending after {days} days?",
        "How long will my outgoing transfer stay pending?",
        "The {amount} I sent {date} is stuck as pending in the app.",
        "A transfer to {country} has shown pending for {days} days, please check.",
    ),
    "cancel_transfer": (
        "I need to cancel the transfer of {amount} I made {date}.",
        "I sent money to the wrong person, can I cancel the transfer to {bank}?",
        "How do I stop a transfer I just made for {amount}?",
        "Please cancel my payment to {bank}, I made a mistake.",
        "Is it too late to reverse the transfer I sent {date}?",
    ),
    "failed_transfer": (
        "My transfer of {amount} to {bank} failed {date}.",
        "Why did my bank transfer fail? I tried to send {amount}.",
        "The transfer to {country} didn't go through, it says failed.",
        "I keep getting transfer failed when paying {bank}.",
        "My payment of {amount} {date} bounced back as failed.",
    ),
    "transfer_fee_charged": (
        "Why was there a fee on my transfer of {amount} to {bank}?",
        "I got charged for sending money to {country} {date}.",
        "There's a fee on my outgoing transfer, I thought transfers were free.",
        "You took {amount2} as a fee when I sent {amount}, why?",
        "What is the charge on the transfer I made {date}?",
    ),
    "beneficiary_not_allowed": (
        "The app won't let me add {bank} as a beneficiary.",
        "Why can't I add a new payee in {country}?",
        "I get beneficiary not allowed when I try to pay {bank}.",
        "Adding my landlord as a recipient fails every time since {date}.",
        "Why is this beneficiary blocked? I need to send {amount}.",
    ),
    "balance_not_updated_after_bank_transfer": (
        "I moved {amount} from {bank} {date} but my balance hasn't changed.",
        "My balance still doesn't show the bank transfer I made {days} days ago.",
        "The transfer from {bank} left my account but my balance here is the same.",
        "Why is my balance not updated after I sent {amount} in from {bank}?",
        "Money from {bank} arrived {date} according to them, but not in my balance.",
    ),
    "balance_not_updated_after_cheque_or_cash_deposit": (
        "I deposited {amount} in cash {date} and my balance hasn't changed.",
        "The cheque I paid in {days} days ago still isn't in my balance.",
        "Why isn't my cash deposit of {amount} showing yet?",
        "I put a cheque for {amount} in {date} and the balance is the same.",
        "My balance didn't update after the cash deposit on {weekday}.",
    ),
    "extra_charge_on_statement": (
        "There's an extra charge of {amount2} on my statement next to {merchant}.",
        "My statement shows a charge from {date} I don't recognise.",
        "Why is there an unknown extra charge of {amount} on my statement?",
        "I see an extra payment to {merchant} on my statement that I didn't make.",
        "Can you explain the additional {amount} on this month's statement?",
    ),
    "transaction_charged_twice": (
        "I was charged {times} for the same purchase at {merchant}.",
        "My {amount} payment at {merchant} appears twice.",
        "Why do I see a duplicate transaction from {date}?",
        "{merchant} took {amount} from my card twice {date}.",
        "The same payment of {amount} shows up two times in the app.",
    ),
    "request_refund": (
        "How do I get a refund from {merchant} for {amount}?",
        "I want my money back for an order at {merchant} {date}.",
        "Can you help me request a refund of {amount}?",
        "{merchant} never delivered my order, I want a refund.",
        "I returned an item to {merchant} {date}, how do I ask for the refund?",
    ),
    "refund_not_showing_up": (
        "{merchant} refunded me {amount} {date} but I don't see it.",
        "My refund from {merchant} still isn't in my account after {days} days.",
        "Where is my refund? {merchant} says they sent it {date}.",
        "The {amount} refund hasn't shown up in the app yet.",
        "I was promised a refund of {amount} {date} and nothing has come through.",
    ),
    "cash_withdrawal_charge": (
        "Why was I charged for taking out {amount} at an ATM?",
        "There is a fee on my cash withdrawal in {country} {date}.",
        "How much do you charge for ATM withdrawals abroad?",
        "I withdrew {amount} {date} and got a fee, I thought it was free.",
        "What's the fee for getting cash out in {country}?",
    ),
    "declined_cash_withdrawal": (
        "The ATM declined my card when I tried to take out {amount}.",
        "Why can't I withdraw cash in {country}? It says declined.",
        "My cash withdrawal was rejected {date}.",
        "I tried to take {amount} out of an ATM and it refused the card.",
        "Cash machine in {country} keeps declining my card ending {last4}.",
    ),
    "wrong_amount_of_cash_received": (
        "The ATM gave me less cash than I asked for {date}.",
        "I asked for {amount} but the machine only gave me part of it.",
        "I got the wrong amount of cash from an ATM in {country}.",
        "The cash machine charged me {amount} and gave me less money.",
        "I withdrew {amount} {date} and received the wrong amount of notes.",
    ),
    "direct_debit_payment_not_recognised": (
        "There's a direct debit from {merchant} I never set up.",
        "I don't recognise a direct debit of {amount} taken {date}.",
        "Who is this direct debit to? It took {amount} from my account.",
        "A direct debit I don't know about went out on {weekday}.",
        "Please explain the direct debit from {merchant} for {amount}.",
    ),
    "apple_pay_or_google_pay": (
        "How do I add my card to Apple Pay on my {device}?",
        "Google Pay won't accept my card at {merchant}.",
        "Can I use my card with Apple Pay in {country}?",
        "My card disappeared from Google Pay {date}.",
        "Is Apple Pay supported? I want to pay at {merchant} with my {device}.",
    ),
    "get_disposable_virtual_card": (
        "How do I create a disposable virtual card for a purchase at {merchant}?",
        "I want a one-time card number to pay {amount} online.",
        "Where can I make a single-use virtual card in the app?",
        "Can I get a disposable card for shopping on {merchant}?",
        "I need a throwaway virtual card before I buy from {merchant}.",
    ),
    "getting_virtual_card": (
        "How do I get a virtual card on my {device}?",
        "Can I order a virtual card instead of waiting {days} days for a plastic one?",
        "I want a virtual card to use at {merchant}, how?",
        "Is there a virtual card option in {country}?",
        "Where in the app can I get a virtual card? I need to pay {amount}.",
    ),
    "verify_my_identity": (
        "How do I verify my identity? The app asked me {date}.",
        "Identity verification keeps failing on my {device}.",
        "What documents do you need to verify who I am? I live in {country}.",
        "Why do I have to verify my identity again {date}?",
        "My ID check has been stuck for {days} days.",
    ),
    "passcode_forgotten": (
        "I forgot my passcode and can't log in on my {device}.",
        "How do I reset the app passcode? I was locked out {date}.",
        "I can't remember the passcode for the app.",
        "Locked out of the app since {date} because I forgot the code.",
        "I changed phones to a {device} and forgot my passcode.",
    ),
    "change_pin": (
        "How do I change my card PIN?",
        "I want a new PIN for the card ending {last4}.",
        "Can I change my PIN at an ATM in {country}?",
        "Where do I set a different PIN in the app on my {device}?",
        "I'd like to change the PIN I chose {date}.",
    ),
    "pin_blocked": (
        "I entered the wrong PIN {times} and now it's blocked.",
        "My PIN got blocked at {merchant} {date}.",
        "How do I unblock my PIN? I tried too many times in {country}.",
        "The ATM says my PIN is blocked on the card ending {last4}.",
        "PIN locked after I typed it wrong {date}, help.",
    ),
    "edit_personal_details": (
        "How do I change my address? I moved {date}.",
        "I need to update my phone number in the app on my {device}.",
        "Can I edit my name on the account? I got married {date}.",
        "I moved to {country} and need to change my personal details.",
        "Where do I update my email and home address?",
    ),
    "terminate_account": (
        "I want to close my account and move my money to {bank}.",
        "How do I delete my account? I'm moving to {country}.",
        "Please terminate my account by {weekday}.",
        "I no longer need this account, how can I close it?",
        "Close my account and send the remaining {amount} to {bank}.",
    ),
    "country_support": (
        "Do you support customers living in {country}?",
        "Can I open an account if I live in {country}?",
        "Which countries is the card available in? I'm moving to {country}.",
        "Is your service available in {country} yet?",
        "I'm relocating to {country} in {days} days, can I keep using the account?",
    ),
    "age_limit": (
        "What is the minimum age to open an account?",
        "Can my {days}-year-old son have a card?",
        "Is there an age limit for opening an account in {country}?",
        "How old do I have to be to sign up? My daughter wants to join.",
        "Can a teenager open an account? She turns {days} on {weekday}.",
    ),
    "receiving_money": (
        "How can I receive my salary of {amount} into this account?",
        "Can someone from {country} send money to my account?",
        "What details do I give my employer so they can pay me?",
        "How do I get paid into this account from {bank}?",
        "A friend wants to send me {amount}, what do they need?",
    ),
    "contactless_not_working": (
        "Contactless isn't working at {merchant}.",
        "My card won't tap to pay since {date}.",
        "Why does contactless fail for payments under {amount}?",
        "Tap to pay stopped working on my card ending {last4}.",
        "Contactless payments get rejected in {country}, chip and PIN works.",
    ),
    "card_about_to_expire": (
        "My card expires next month, will you send a new one?",
        "What happens when my card ending {last4} expires?",
        "My card expires {date}, how do I get a replacement?",
        "Will a new card be sent to {country} before mine expires?",
        "The expiry date on my card is coming up in {days} days.",
    ),
}

INTENT_LABELS: tuple[str, ...] = tuple(INTENTS)

INTENT_INSTRUCTIONS = (
    "You are the support assistant of a card and payments app. Read the customer's message and "
    "answer with the one intent label that fits it best, nothing else."
)

_OPENERS = ("", "", "", "Hi, ", "Hello, ", "Hey. ", "Hi there! ", "Quick question: ", "Please help, ",
            "Good morning. ", "Urgent: ")
_CONTEXTS = (
    "I'm travelling in {country} at the moment.", "My card ends in {last4}.",
    "I've had the account for {years} years.", "I use the app on my {device}.",
    "This is the first time it has happened.", "I already restarted the app.",
    "I checked the app {date}.", "It's my main account.",
)
_CLOSERS = ("", "", "", " Thanks.", " Thank you!", " Please advise.", " Can you help?",
            " This is urgent.", " Thx", " Cheers.")

_TYPO_WORD = re.compile(r"[A-Za-z]{5,}")


def _typo(text: str, rng: random.Random) -> str:
    words = list(_TYPO_WORD.finditer(text))
    if not words:
        return text
    m = rng.choice(words)
    w = m.group()
    i = rng.randint(1, len(w) - 2)
    kind = rng.random()
    if kind < 0.4:
        w = w[:i] + w[i + 1] + w[i] + w[i + 2:]  # swap two letters
    elif kind < 0.7:
        w = w[:i] + w[i + 1:]  # drop one
    else:
        w = w[:i] + w[i] + w[i:]  # double one
    return text[: m.start()] + w + text[m.end():]


def _noise(text: str, rng: random.Random) -> str:
    if rng.random() < 0.2:
        text = _typo(text, rng)
    if rng.random() < 0.2:
        text = text.lower()
    if rng.random() < 0.25:
        text = text.rstrip(".!")
    return text


def _key(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _intent_counts(n: int, rng: random.Random) -> dict[str, int]:
    """Mildly unbalanced counts (weights 0.7-1.3) that sum to n."""
    weights = [rng.uniform(0.7, 1.3) for _ in INTENT_LABELS]
    total = sum(weights)
    counts = [int(n * w / total) for w in weights]
    for i in range(n - sum(counts)):
        counts[i % len(counts)] += 1
    return dict(zip(INTENT_LABELS, counts, strict=True))


# Words that start a sentence and read the same in lower case after an opener ("Hi, how ...").
_LOWERABLE = frozenset((
    "how", "what", "why", "my", "can", "is", "where", "when", "the", "there", "do", "please",
    "which", "who", "a", "someone", "money", "adding", "identity", "contactless", "locked",
    "close", "cash", "card", "tap", "top", "this", "it's",
))


def _intent_text(label: str, rng: random.Random) -> str:
    slots = _fillers(rng)
    sentences = [rng.choice(INTENTS[label]).format(**slots)]
    if rng.random() < 0.3:
        sentences.insert(rng.randint(0, 1), rng.choice(_CONTEXTS).format(**slots))
    text = " ".join(s[0].upper() + s[1:] for s in sentences)
    opener = rng.choice(_OPENERS)
    if opener.endswith((": ", ", ")) and text.split(" ", 1)[0].lower() in _LOWERABLE:
        text = text[0].lower() + text[1:]
    return _noise(opener + text + rng.choice(_CLOSERS), rng)


def generate_intents(n: int = 3000, seed: int = 13) -> list[dict[str, str]]:
    """``n`` records ``{"text", "category"}`` over the 40 intents, shuffled; no two texts alike
    after lowercasing and dropping punctuation."""
    rng = random.Random(f"intents-{seed}")
    seen: set[str] = set()
    rows = []
    for label, count in _intent_counts(n, rng).items():
        for _ in range(count):
            for _attempt in range(50):
                text = _intent_text(label, rng)
                if _key(text) not in seen:
                    break
            seen.add(_key(text))
            rows.append({"text": text, "category": label})
    rng.shuffle(rows)
    return rows


def write_intents(out_dir: Path, *, n: int = 3000, seed: int = 13) -> dict[str, Any]:
    """Write ``data/intents.csv`` (columns ``text,category``) under ``out_dir``."""
    rows = generate_intents(n, seed)
    path = Path(out_dir) / "data" / "intents.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    return {"path": path, "records": len(rows), "labels": dict(Counter(r["category"] for r in rows))}


# --------------------------------------------------------------------------- summaries
# (ticket sentence variants, the summary's description after "Customer ")
PERSONAS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("I've been a customer of yours for {years} years.", "I have shopped with you for {years} years now."),
     "of {years} years"),
    (("I'm on the Premium plan.", "As a Premium member I expected better."), "on the Premium plan"),
    (("This was my first order with you.", "I've never ordered from you before this."),
     "placing a first order"),
    (("I bought it as a gift for my {relative}.", "It was a present for my {relative}."),
     "who bought it as a gift"),
    (("I run a small {business} and use it every day.", "We use it daily at my {business}."),
     "running a small {business}"),
    (("I work from home and depend on it.", "I rely on it for work since I'm fully remote."),
     "working from home"),
    (("I'm a teacher and use it in class.", "I use it with my students at school."),
     "who is a teacher"),
    (("I'm a student and saved up for months for it.", "As a student this was a big purchase for me."),
     "who is a student"),
    (("I'm a returning customer, this is my {nth} order.", "I have ordered from you {count} times before."),
     "with several past orders"),
    (("I bought it during the {sale} sale.", "I picked it up in your {sale} sale."),
     "who bought in the {sale} sale"),
)
RELATIVES = ("mother", "father", "sister", "brother", "grandmother", "son", "daughter", "partner")
BUSINESSES = ("bakery", "cafe", "design studio", "hair salon", "bookshop", "dental practice")
SALES = ("Black Friday", "summer", "January", "spring", "back-to-school")

# (product as the ticket may name it, product in the summary, kind)
PRODUCTS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("Nimbus 14 laptop", "Nimbus 14", "Nimbus laptop"), "the Nimbus 14 laptop", "computer"),
    (("Vortex Pro laptop", "Vortex Pro", "Vortex laptop"), "the Vortex Pro laptop", "computer"),
    (("Aero earbuds", "Aero wireless earbuds", "Aero buds"), "the Aero earbuds", "audio"),
    (("Halo headphones", "Halo noise-cancelling headphones", "Halo"), "the Halo headphones", "audio"),
    (("Vela thermostat", "Vela smart thermostat", "Vela"), "the Vela thermostat", "smart_home"),
    (("Orbit robot vacuum", "Orbit vacuum", "Orbit"), "the Orbit robot vacuum", "appliance"),
    (("Brew Pro coffee machine", "Brew Pro", "Brew Pro machine"), "the Brew Pro coffee machine", "appliance"),
    (("Stride watch", "Stride running watch", "Stride"), "the Stride watch", "wearable"),
    (("Pulse fitness band", "Pulse band", "Pulse tracker"), "the Pulse fitness band", "wearable"),
    (("Lumen doorbell camera", "Lumen doorbell", "Lumen camera"), "the Lumen doorbell camera", "smart_home"),
    (("Tempo blender", "Tempo", "Tempo mixer"), "the Tempo blender", "appliance"),
    (("Quill tablet", "Quill 10 tablet", "Quill 10"), "the Quill tablet", "computer"),
)

# per product kind: (ticket sentence variants, the issue in the summary)
ISSUES: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "computer": (
        (("The screen has a crack right across it.", "It arrived with a cracked screen."), "a cracked screen"),
        (("The battery dies after about {hours} hours.", "Battery life is only {hours} hours, nowhere near what you advertise."),
         "short battery life"),
        (("It won't turn on at all.", "It's completely dead, no lights when I press power."), "a device that will not power on"),
        (("The Wi-Fi keeps dropping every few minutes.", "It loses the wireless connection constantly."), "Wi-Fi drops"),
        (("Several keys stopped working.", "The keyboard types the wrong letters."), "a faulty keyboard"),
        (("It gets very hot and shuts itself down.", "It overheats after {minutes} minutes and switches off."), "overheating"),
    ),
    "audio": (
        (("The left side has no sound.", "Only the right side plays anything."), "no sound on one side"),
        (("They won't pair with my phone.", "Bluetooth pairing fails every time."), "Bluetooth pairing failures"),
        (("The battery dies after about {hours} hours.", "They barely last {hours} hours on a charge."), "short battery life"),
        (("There's a loud crackling noise.", "I hear static and crackling during music."), "crackling sound"),
        (("The charging case won't charge.", "The case doesn't charge anymore."), "a charging case that will not charge"),
    ),
    "smart_home": (
        (("It keeps going offline in the app.", "The app says it's offline several times a day."), "frequent disconnections"),
        (("The firmware update failed and now it's stuck.", "After the last update it's stuck on a loading screen."),
         "a failed firmware update"),
        (("It won't connect to my Wi-Fi.", "Setup fails at the Wi-Fi step every time."), "Wi-Fi setup failures"),
        (("The display is blank.", "The screen stays black."), "a blank display"),
        (("The battery dies after about {hours} hours.", "It needs charging every {hours} hours."), "short battery life"),
    ),
    "appliance": (
        (("It makes a grinding noise.", "There's a horrible grinding sound when it runs."), "a grinding noise"),
        (("It leaks water onto the counter.", "Water pools underneath it after every use."), "a water leak"),
        (("The motor stopped after {days} days.", "It worked for {days} days and then the motor died."), "a motor failure"),
        (("The buttons don't respond.", "None of the controls do anything when pressed."), "unresponsive controls"),
        (("It smells of burning plastic.", "There's a burning smell when I switch it on."), "a burning smell"),
    ),
    "wearable": (
        (("The strap snapped.", "The band broke off after a week."), "a broken strap"),
        (("The heart rate readings are way off.", "It shows a heart rate of {bpm} while I'm sitting still."),
         "inaccurate heart-rate readings"),
        (("It won't sync with the app.", "Nothing syncs to my phone anymore."), "sync failures"),
        (("The battery dies after about {hours} hours.", "It barely lasts {hours} hours."), "short battery life"),
        (("The screen fogs up inside.", "There's condensation under the glass."), "condensation under the screen"),
    ),
}

# (ticket sentence variants, what the summary says they want)
RESOLUTIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("I want a full refund.", "Please refund my money.", "I'd like my money back."), "a refund"),
    (("Please send me a replacement.", "I need a new one sent out.", "Can you replace it?"), "a replacement"),
    (("I'd like it repaired under warranty.", "Please fix it under the warranty."), "a warranty repair"),
    (("Is there a fix I can try myself?", "Can you tell me how to fix it?"), "troubleshooting steps"),
    (("I'd like to exchange it for a different model.", "Can I swap it for another model?"), "an exchange"),
    (("Please cancel the rest of my order.", "Cancel my other pending order too."), "to cancel the order"),
    (("Store credit would be fine.", "I'd accept a voucher instead."), "store credit"),
    (("Can someone call me back about this?", "Please have an agent phone me."), "a call back"),
)

FIRST_NAMES = ("Maria", "James", "Aisha", "Lukas", "Priya", "Tom", "Sofia", "Kenji", "Olivia", "Mateo",
               "Fatima", "Daniel", "Chloe", "Ahmed", "Elena", "Noah", "Ingrid", "Ravi")
SURNAMES = ("Lopez", "Smith", "Khan", "Weber", "Sharma", "Brown", "Rossi", "Tanaka", "Nowak",
            "Garcia", "Haddad", "Murphy", "Dubois", "Silva", "Jensen", "Okafor")
_GREETINGS = ("Hi,", "Hello,", "Dear support team,", "Hi there,", "Hello support,", "To whom it may concern,",
              "Hey,", "")
_PURCHASES = ("I bought the {product} {date}.", "I ordered the {product} {date} (order #{order}).",
              "My {product} arrived {date}.", "I got the {product} {date}.",
              "Order #{order}: {product}.")
_ASIDES = ("Delivery was quick, to be fair.", "I've already tried restarting it.",
           "I followed the manual exactly.", "This is really disappointing.",
           "I have the receipt if you need it.", "I already reset it to factory settings.",
           "Honestly I expected more for the price.")
_SIGNOFFS = ("Thanks,\n{name}", "Regards,\n{name}", "Best,\n{first}", "Thank you.", "Thanks in advance.",
             "- {first}", "")

SUMMARY_INSTRUCTIONS = (
    "Summarise the customer's support ticket in one sentence of this form: "
    "Customer <who they are, without names> reports <the issue> with <the product>; wants <what they ask for>."
)


def _summary_slots(rng: random.Random) -> dict[str, str]:
    nth = rng.randint(3, 9)
    return {
        "years": str(rng.randint(2, 15)), "relative": rng.choice(RELATIVES),
        "business": rng.choice(BUSINESSES), "sale": rng.choice(SALES),
        "nth": f"{nth}{'rd' if nth == 3 else 'th'}", "count": str(nth - 1),
        "hours": str(rng.randint(2, 5)), "minutes": str(rng.randint(5, 40)),
        "days": str(rng.randint(2, 20)), "bpm": str(rng.randint(150, 220)),
        "order": str(rng.randint(10000, 99999)), "date": _date(rng),
    }


def _ticket(rng: random.Random) -> tuple[str, str, dict[str, str]]:
    slots = _summary_slots(rng)
    persona_variants, persona = rng.choice(PERSONAS)
    names, product, kind = rng.choice(PRODUCTS)
    issue_variants, issue = rng.choice(ISSUES[kind])
    wish_variants, wish = rng.choice(RESOLUTIONS)
    first, last = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
    fill = {**slots, "product": rng.choice(names), "name": f"{first} {last}", "first": first}
    body = [rng.choice(_PURCHASES).format(**fill), rng.choice(issue_variants).format(**fill)]
    body.insert(rng.choice((0, 1, 2)), rng.choice(persona_variants).format(**fill))
    if rng.random() < 0.4:
        body.insert(rng.randint(1, len(body)), rng.choice(_ASIDES))
    body.append(rng.choice(wish_variants))
    text = _noise(" ".join(body), rng)
    greeting, signoff = rng.choice(_GREETINGS), rng.choice(_SIGNOFFS).format(**fill)
    ticket = "\n\n".join(p for p in (greeting, text, signoff) if p)
    summary = f"Customer {persona.format(**slots)} reports {issue} with {product}; wants {wish}."
    truth = {"persona": persona.format(**slots), "issue": issue, "product": product, "resolution": wish}
    return ticket, summary, truth


def generate_summaries(n: int = 2000, seed: int = 13) -> list[dict[str, Any]]:
    """``n`` records ``{"ticket", "summary", "truth"}``; no two tickets alike."""
    rng = random.Random(f"summaries-{seed}")
    seen: set[str] = set()
    rows = []
    for _ in range(n):
        for _attempt in range(50):
            ticket, summary, truth = _ticket(rng)
            if _key(ticket) not in seen:
                break
        seen.add(_key(ticket))
        rows.append({"ticket": ticket, "summary": summary, "truth": truth})
    return rows


def write_summaries(out_dir: Path, *, n: int = 2000, seed: int = 13) -> dict[str, Any]:
    """Write ``data/tickets.jsonl`` (OpenAI chat records) under ``out_dir``."""
    rows = generate_summaries(n, seed)
    path = Path(out_dir) / "data" / "tickets.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for i, row in enumerate(rows):
            record = {"messages": [{"role": "system", "content": SUMMARY_INSTRUCTIONS},
                                   {"role": "user", "content": row["ticket"]},
                                   {"role": "assistant", "content": row["summary"]}],
                      "ticket_id": f"T{i:05d}"}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"path": path, "records": len(rows)}
