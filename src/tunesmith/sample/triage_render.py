"""Assembling a whole ticket: subject, greeting, the issue paragraphs in any order, follow-up
and tone lines, signature with personal data, and the writing style (terse, angry, verbose,
typos, smart quotes, a line in the customer's own language).

The ticket text a model sees is the helpdesk's rendering: a subject line, the customer's
plan and the submission date (both facts the labels depend on), then the message.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date

from tunesmith.sample.triage_phrases import Ctx, describe_issue, product_name
from tunesmith.sample.triage_policy import TicketFacts

SUBJECTS: dict[str, tuple[str, ...]] = {
    "account_compromised": ("Account hacked?", "Suspicious login", "someone is in my account"),
    "unrecognised_charge": ("Unknown charge", "What is this payment?", "Charge on my card"),
    "phishing_report": ("Scam email?", "Phishing", "Is this email from you?"),
    "duplicate_charge": ("Charged twice", "Double payment", "billing problem"),
    "wrong_amount": ("Wrong amount charged", "Invoice amount incorrect", "Billing"),
    "invoice_request": ("Invoice request", "VAT invoice", "Receipt"),
    "plan_change": ("Change plan", "Downgrade", "Cloud plan"),
    "hardware_return": ("Return", "Refund request", "Return {name}"),
    "subscription_refund": ("Refund subscription", "Unwanted renewal", "Cancel and refund"),
    "late_delivery": ("Where is my order?", "Order not arrived", "Delivery"),
    "damaged_delivery": ("Damaged item", "Arrived broken", "{name} damaged in transit"),
    "address_change": ("Change address", "Delivery address", "Shipping address update"),
    "login_problem": ("Can't log in", "Password reset not working", "Login"),
    "lost_2fa": ("Lost 2FA phone", "Locked out - 2FA", "two factor"),
    "email_change": ("Change email", "Update login email", "Account email"),
    "device_fault": ("{name} not working", "{name} issue", "Problem with {name}", "{name}"),
    "product_question": ("Question", "Compatibility question", "{name} question"),
    "feature_request": ("Feature request", "Suggestion", "Idea"),
    "feedback": ("Thanks!", "Feedback", "Compliment"),
}
GENERIC_SUBJECTS = ("Help", "Question", "(no subject)", "Problem", "URGENT", "Support request",
                    "hi", "HELP!!!", "Issue", "Please read")
GREETINGS = ("Hi,", "Hello,", "Hi there,", "Hello team,", "Dear Halcyon Support,", "Hey,",
             "Good morning,", "To whom it may concern,", "Hi Halcyon,")
CLOSINGS = ("Thanks,", "Thank you,", "Best regards,", "Cheers,", "Kind regards,", "Regards,",
            "Thanks in advance,", "Best,")
# locale -> (greeting, thanks, an apology for their English); "" = none.
NATIVE = {
    "es_ES": ("Hola,", "Gracias.", "Perdón por mi inglés."),
    "de_DE": ("Hallo,", "Danke!", "Entschuldigung für mein Englisch."),
    "fr_FR": ("Bonjour,", "Merci beaucoup.", "Désolé pour mon anglais."),
    "pt_BR": ("Olá,", "Obrigado!", "Desculpe meu inglês."),
    "tr_TR": ("Merhaba,", "Teşekkürler.", ""), "pl_PL": ("Dzień dobry,", "Dziękuję.", ""),
    "sv_SE": ("Hej,", "Tack!", ""), "ja_JP": ("", "よろしくお願いします。", "英語が下手ですみません。"),
    "zh_CN": ("您好,", "谢谢!", ""), "ko_KR": ("안녕하세요,", "감사합니다.", ""),
    "ar_EG": ("", "شكراً", ""), "vi_VN": ("Xin chào,", "Cảm ơn.", ""),
}
REPEAT = (
    "This is the third time I'm writing about this.",
    "I already opened a ticket about this last week and nobody replied.",
    "Following up on my previous email, this is still not solved.",
    "Second time asking!",
    "I called on Friday and was told someone would email me. Nothing yet.",
)
# Lines that look like a repeat contact or an urgency cue but are neither (labelling guide).
NOT_REPEAT = (
    "I've been a customer since 2019.", "I already contacted my bank about it.",
    "My neighbour had the same thing last year.", "I've read the help pages already.",
)
ANGRY = ("This is unacceptable!!!", "VERY DISAPPOINTED.", "I NEED THIS FIXED TODAY.",
         "Honestly the worst experience I've had with a company.", "Please treat this as URGENT.")
CALM = ("No rush on this.", "Whenever you get a chance.", "Not a big deal, just letting you know.")
BACKSTORY = (
    "We bought the whole starter kit for our new flat last spring.",
    "My kids set most of this up so I'm not very technical.",
    "I run a small B&B and use your cameras at the entrance.",
    "I look after the devices in our office building.",
)
CONNECTORS = ("Also,", "One more thing.", "Separately:", "Oh and", "P.S.", "On top of that,",
              "Another issue:")
SENT_FROM = ("Sent from my iPhone", "Sent from my Galaxy", "Get Outlook for Android")
DISCLAIMER = (
    "CONFIDENTIALITY NOTICE: This email and any attachments are confidential and intended "
    "solely for the addressee. If you have received it in error, please notify the sender "
    "and delete it."
)
STYLES = {"plain": 60, "terse": 15, "angry": 12, "verbose": 13}
_ABBREVIATIONS = {"please": "pls", "thanks": "thx", "you": "u", "because": "bc"}
CHANNELS = ("email", "email", "email", "web_form", "chat")


@dataclass
class Rendered:
    subject: str
    body: str
    channel: str
    style: str
    pii: dict[str, int] = field(default_factory=dict)
    planted: list[tuple[str, str]] = field(default_factory=list)


def ticket_text(subject: str, plan: str, created: date, body: str) -> str:
    """The ticket as the agent (and the model) sees it: header lines, then the message."""
    return f"Subject: {subject}\nPlan: {plan} | Submitted: {created.isoformat()}\n\n{body}"


def _subject(ctx: Ctx, facts: TicketFacts) -> str:
    issue = ctx.rng.choice(facts.issues)  # any issue, not necessarily the one that decides
    if ctx.rng.random() < 0.25:
        subject = ctx.pick(GENERIC_SUBJECTS)
    else:
        name = product_name(ctx, issue.product) if issue.product else "Account"
        subject = ctx.pick(SUBJECTS[issue.kind]).format(name=name)
    if ctx.rng.random() < (0.4 if facts.repeat_contact else 0.05):
        subject = ctx.pick(("Re: ", "RE: ", "Fwd: ")) + subject
    return subject


# Words that stay capitalised after "Also," (names, brands, "I").
_KEEP_CAPITAL = {"I", "I'd", "I'm", "I've", "Lumen", "Aria", "Breeze", "Tala", "Pulse",
                 "Halcyon", "Cloud", "Order", "HALCYON*HOME"}


def _join(connector: str, paragraph: str) -> str:
    first = paragraph.split(" ", 1)[0]
    if connector[-1] in ",d" and first not in _KEEP_CAPITAL:  # "Also, my ...", "Oh and my ..."
        paragraph = paragraph[0].lower() + paragraph[1:]
    return f"{connector} {paragraph}"


def _issue_block(ctx: Ctx, facts: TicketFacts) -> list[str]:
    """The issue paragraphs, shuffled: the first issue mentioned is often not the primary."""
    issues = list(facts.issues)
    ctx.rng.shuffle(issues)
    paragraphs = [describe_issue(ctx, issues[0])]
    for issue in issues[1:]:
        paragraphs.append(_join(ctx.pick(CONNECTORS), describe_issue(ctx, issue)))
    return paragraphs


def _opening(ctx: Ctx, style: str) -> list[str]:
    native = NATIVE.get(ctx.customer.locale)
    lines: list[str] = []
    if native and native[0] and ctx.rng.random() < 0.3:
        lines.append(native[0])
    elif style != "terse" and ctx.rng.random() < 0.8:
        lines.append(ctx.pick(GREETINGS))
    if ctx.rng.random() < 0.25:
        lines.append(_intro(ctx))
    if style == "verbose":
        lines.append(ctx.pick(BACKSTORY))
    return lines


def _intro(ctx: Ctx) -> str:
    c = ctx.customer
    if c.company and ctx.rng.random() < 0.5:
        return f"This is {ctx.mark('PERSON', c.first)} from {c.company}."
    if ctx.rng.random() < 0.5:
        return (f"My name is {ctx.mark('PERSON', c.name)} and my account email is "
                f"{ctx.mark('EMAIL', c.email)}.")
    return f"Account: {ctx.mark('EMAIL', c.email)}"


def _signature(ctx: Ctx, channel: str, style: str) -> list[str]:
    c, rng = ctx.customer, ctx.rng
    if channel == "chat" or (style == "terse" and rng.random() < 0.6):
        return []
    native = NATIVE.get(c.locale)
    closing = native[1] if native and native[1] and rng.random() < 0.3 else ctx.pick(CLOSINGS)
    name = ctx.pick((c.name, c.name, c.first, f"{c.first} {c.last[0]}."))
    lines = [closing, ctx.mark("PERSON", name)]
    if c.company and rng.random() < 0.7:
        lines.append(f"{ctx.pick(('Facilities Manager', 'IT Admin', 'Office Manager'))}, {c.company}")
    if rng.random() < 0.35:
        lines.append(ctx.pick(("Tel: ", "Mobile: ", "Phone ", "")) + ctx.mark("PHONE", c.phone))
    if rng.random() < 0.1:
        lines.append(ctx.mark("STREET_ADDRESS", c.address))
    return ["\n".join(lines)]


def _closing_lines(ctx: Ctx, facts: TicketFacts, style: str) -> list[str]:
    rng, lines = ctx.rng, []
    if facts.repeat_contact:
        lines.append(ctx.pick(REPEAT))
    elif rng.random() < 0.08:
        lines.append(ctx.pick(NOT_REPEAT))
    if style == "angry":
        lines.append(ctx.pick(ANGRY))
    elif rng.random() < 0.08:
        lines.append(ctx.pick(CALM))
    if rng.random() < 0.1:
        lines.append(f"You can call me on {ctx.mark('PHONE', ctx.customer.phone)}.")
    native = NATIVE.get(ctx.customer.locale)
    if native and native[2] and rng.random() < 0.25:
        lines.append(native[2])
    rng.shuffle(lines)  # a follow-up note can come before or after the tone line
    return lines


def render_ticket(ctx: Ctx, facts: TicketFacts) -> Rendered:
    """Write one ticket's subject and message from its facts."""
    rng = ctx.rng
    style = rng.choices(list(STYLES), weights=list(STYLES.values()))[0]
    channel = ctx.pick(CHANNELS)
    subject = _subject(ctx, facts)
    parts = _opening(ctx, style)
    closing = _closing_lines(ctx, facts, style)
    if facts.repeat_contact and rng.random() < 0.5:
        parts += closing + _issue_block(ctx, facts)
    else:
        parts += _issue_block(ctx, facts) + closing
    parts += _signature(ctx, channel, style)
    if channel == "email" and rng.random() < 0.06:
        parts.append(ctx.pick(SENT_FROM))
    if channel == "email" and rng.random() < 0.04:
        parts.append(DISCLAIMER)
    body = ctx.pick(("\n\n", "\n\n", "\n", " ")).join(parts)
    body = apply_style(ctx, body, style)
    return Rendered(subject, body, channel, style, dict(ctx.pii), list(ctx.planted))


# --------------------------------------------------------------------------- style
# Words that carry a label-deciding fact stay intact so the tests can read the facts back
# from the text; a human would still read "twcie" as "twice", a parser would not.
FACT_WORDS = frozenset(
    {m.lower() for m in ("January", "February", "March", "April", "May", "June", "July",
                         "August", "September", "October", "November", "December")}
    | {"days", "weeks", "week", "yesterday", "night", "daytime", "twice", "times", "express",
       "standard", "normal", "international", "android", "iphone", "already", "third",
       "second", "previous", "firmware", "version", "latest", "newest", "updates"}
    | {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight"}
)


def protected_words(planted: list[tuple[str, str]]) -> set[str]:
    """Words inside planted personal data (typos must not change the values we counted)
    and the words that carry a label's facts."""
    return {w.lower() for _, value in planted for w in re.findall(r"\w+", value)} | FACT_WORDS


def _terse(text: str) -> str:
    words = []
    for word in re.split(r"( +)", text):
        if any(ch.isdigit() for ch in word) or "@" in word:
            words.append(word)  # keep ids, amounts, versions and emails exact
        else:
            low = word.lower()
            words.append(_ABBREVIATIONS.get(low, low))
    # Drop full stops at line ends, but not after an initial ("omar h.").
    return re.sub(r"(?<=[a-z]{2})\.\n", "\n", "".join(words))


def add_typos(rng: random.Random, text: str, count: int, protected: set[str]) -> str:
    """Swap, drop, double or mistype letters in `count` ordinary lowercase words."""
    spans = [m.span() for m in re.finditer(r"(?<![\w@.'-])[a-z]{4,}(?![\w@'-])", text)
             if m.group().lower() not in protected]
    for start, end in sorted(rng.sample(spans, min(count, len(spans))), reverse=True):
        word = text[start:end]
        i = rng.randrange(1, len(word) - 1)
        op = rng.randrange(4)
        if op == 0:
            word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif op == 1:
            word = word[:i] + word[i + 1:]
        elif op == 2:
            word = word[:i] + word[i] + word[i:]
        else:
            word = word[:i] + rng.choice("qwertyuiopasdfghjklzxcvbnm") + word[i + 1:]
        text = text[:start] + word + text[end:]
    return text


def apply_style(ctx: Ctx, body: str, style: str) -> str:
    rng = ctx.rng
    if style == "terse":
        body = _terse(body)
    if rng.random() < 0.35:
        body = add_typos(rng, body, rng.randint(1, 3), protected_words(ctx.planted))
    if rng.random() < 0.2:
        body = body.replace("'", "’")  # phones and Macs type curly apostrophes
    return body
