"""The support-triage sample's written rules, as code: label sets, policy numbers, products,
known issues, and the function that labels a ticket from its facts.

The knowledge-base pages (``triage_docs``) are rendered from these same constants, so the
policy a reader sees and the policy the labels follow cannot drift apart. Labels are a pure
function of a ticket's facts (``label_ticket``): a careful human with the labelling guide and
the policy pages reaches the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# --------------------------------------------------------------------------- label sets
# Order matters for CATEGORY_PRIORITY only; the others are listed in a readable order.
CATEGORIES = (
    "security", "billing", "refund", "account_access", "shipping",
    "technical_issue", "known_issue", "general_inquiry",
)
URGENCIES = ("low", "normal", "high", "critical")
ACTIONS = (
    "escalate_security", "issue_refund", "offer_store_credit", "reship_order",
    "reset_access", "escalate_engineering", "send_workaround", "answer_question",
)
# When one ticket raises several issues, a safety hazard decides `category` and
# `next_action`; without one, the issue whose category comes first here decides.
CATEGORY_PRIORITY = CATEGORIES

# --------------------------------------------------------------------------- policy numbers
HARDWARE_REFUND_DAYS = 30  # full refund up to and including this many days after delivery
STORE_CREDIT_DAYS = 90  # store credit after the refund window, up to this many days
SUBSCRIPTION_REFUND_DAYS = 14  # subscription charges refundable this many days after the charge
DELIVERY_DAYS = {"standard": 7, "express": 3, "international": 14}  # days after the order date
DEFAULT_SHIPPING = "standard"  # what an unstated shipping method means
PLANS = ("Starter", "Business", "Enterprise")  # only Enterprise carries the SLA bump
BUMP_PLAN = "Enterprise"  # the SLA plan: urgency one level up


@dataclass(frozen=True, slots=True)
class Product:
    name: str
    kind: str  # "hardware" | "software" | "subscription"
    current_version: str | None = None


PRODUCTS: dict[str, Product] = {
    "lumen_hub": Product("Lumen Hub", "hardware", "4.2.5"),
    "aria_cam": Product("Aria Cam", "hardware", "2.8.4"),
    "breeze_thermostat": Product("Breeze Thermostat", "hardware", "1.14.2"),
    "tala_doorbell": Product("Tala Doorbell", "hardware", "3.1.2"),
    "pulse_plug": Product("Pulse Plug", "hardware", "1.9.3"),
    "halcyon_app": Product("Halcyon app", "software", "7.3.4"),
    "cloud_plus": Product("Halcyon Cloud Plus", "subscription"),
    "cloud_pro": Product("Halcyon Cloud Pro", "subscription"),
}
HARDWARE = tuple(k for k, p in PRODUCTS.items() if p.kind == "hardware")
SUBSCRIPTIONS = tuple(k for k, p in PRODUCTS.items() if p.kind == "subscription")


@dataclass(frozen=True, slots=True)
class KnownIssue:
    id: str
    product: str
    summary: str
    first: str  # first affected version
    last: str  # last affected version (inclusive)
    fixed_in: str
    workaround: str


KNOWN_ISSUES: dict[str, KnownIssue] = {k.id: k for k in (
    KnownIssue("KI-101", "lumen_hub", "Zigbee devices go offline every night (around 02:00-03:00)",
               "4.2.0", "4.2.3", "4.2.4",
               "Settings > Radio: turn off Automatic channel selection and pick channel 15."),
    KnownIssue("KI-102", "aria_cam", "Night-vision image has a pink or purple tint",
               "2.8.0", "2.8.99", "2.9.0 (rolling out)",
               "Camera settings > Night vision: switch IR mode from Smart to Always on."),
    KnownIssue("KI-103", "breeze_thermostat", "Weekly schedule is wiped after a power cut",
               "1.0.0", "1.14.99", "1.15.0 (beta)",
               "Enable Keep schedule on restart in the app, then save the schedule again."),
    KnownIssue("KI-104", "halcyon_app", "Android app crashes when opening a camera's live view",
               "7.3.0", "7.3.2", "7.3.3",
               "Update the app; until then clear the app cache (Android Settings > Apps > Halcyon)."),
    KnownIssue("KI-105", "tala_doorbell", "Indoor chime does not ring when the doorbell is on 5 GHz Wi-Fi",
               "3.0.0", "3.0.99", "3.1.0",
               "Move the doorbell to the 2.4 GHz network or update its firmware."),
    KnownIssue("KI-106", "pulse_plug", "Energy reading shows 0 W after a daylight-saving clock change",
               "1.0.0", "1.9.99", "2.0.0 (rolling out)",
               "Power-cycle the plug; the reading returns within an hour."),
)}


@dataclass(frozen=True, slots=True)
class Symptom:
    product: str
    severity: str  # "degraded" | "dead" | "hazard"
    known_issue: str | None = None  # id of the known issue this symptom matches, if any


SEVERITY_URGENCY = {"degraded": "normal", "dead": "high", "hazard": "critical"}

SYMPTOMS: dict[str, Symptom] = {
    "hub_offline_nightly": Symptom("lumen_hub", "degraded", "KI-101"),
    "hub_offline_microwave": Symptom("lumen_hub", "degraded"),  # near miss of KI-101
    "hub_no_pairing": Symptom("lumen_hub", "degraded"),
    "hub_dead": Symptom("lumen_hub", "dead"),
    "hub_hot": Symptom("lumen_hub", "hazard"),
    "cam_pink_night": Symptom("aria_cam", "degraded", "KI-102"),
    "cam_pink_day": Symptom("aria_cam", "degraded"),  # near miss: KI-102 is night vision only
    "cam_late_alerts": Symptom("aria_cam", "degraded"),
    "cam_no_wifi": Symptom("aria_cam", "dead"),
    "cam_battery_swell": Symptom("aria_cam", "hazard"),
    "thermo_schedule_reset": Symptom("breeze_thermostat", "degraded", "KI-103"),
    "thermo_wrong_temp": Symptom("breeze_thermostat", "degraded"),
    "thermo_blank": Symptom("breeze_thermostat", "dead"),
    "thermo_sparks": Symptom("breeze_thermostat", "hazard"),
    "bell_chime_5ghz": Symptom("tala_doorbell", "degraded", "KI-105"),
    "bell_chime_24ghz": Symptom("tala_doorbell", "degraded"),  # near miss: KI-105 is 5 GHz only
    "bell_dead": Symptom("tala_doorbell", "dead"),
    "plug_zero_watts": Symptom("pulse_plug", "degraded", "KI-106"),
    "plug_random_toggle": Symptom("pulse_plug", "degraded"),
    "plug_scorch": Symptom("pulse_plug", "hazard"),
    "app_crash_android": Symptom("halcyon_app", "degraded", "KI-104"),
    "app_crash_iphone": Symptom("halcyon_app", "degraded"),  # near miss: KI-104 is Android only
    "app_no_notifications": Symptom("halcyon_app", "degraded"),
}

# kind -> (category, base urgency, action) for the kinds whose labels need no facts.
FIXED_RULES: dict[str, tuple[str, str, str]] = {
    "account_compromised": ("security", "critical", "escalate_security"),
    "unrecognised_charge": ("security", "high", "escalate_security"),
    "phishing_report": ("security", "normal", "escalate_security"),
    "duplicate_charge": ("billing", "normal", "issue_refund"),
    "wrong_amount": ("billing", "normal", "issue_refund"),
    "invoice_request": ("billing", "low", "answer_question"),
    "plan_change": ("billing", "low", "answer_question"),
    "damaged_delivery": ("shipping", "normal", "reship_order"),
    "address_change": ("shipping", "low", "answer_question"),
    "login_problem": ("account_access", "normal", "reset_access"),
    "lost_2fa": ("account_access", "high", "escalate_security"),
    "email_change": ("account_access", "low", "reset_access"),
    "product_question": ("general_inquiry", "low", "answer_question"),
    "feature_request": ("general_inquiry", "low", "answer_question"),
    "feedback": ("general_inquiry", "low", "answer_question"),
}
FACT_KINDS = ("hardware_return", "subscription_refund", "late_delivery", "device_fault")
ISSUE_KINDS = tuple(FIXED_RULES) + FACT_KINDS


# --------------------------------------------------------------------------- facts
@dataclass(frozen=True, slots=True)
class Issue:
    """One problem raised in a ticket, as the facts a human reader would extract."""

    kind: str
    product: str | None = None
    days: int | None = None  # days since delivery / charge / order, as the ticket states it
    method: str | None = None  # shipping method as stated; None = not stated
    symptom: str | None = None
    version: str | None = None  # "4.2.1", "latest", or None when not stated
    defective: bool = False  # a return of a faulty item (matters after the credit window)


@dataclass(frozen=True, slots=True)
class TicketFacts:
    plan: str
    repeat_contact: bool  # the customer says they already contacted support about this
    issues: tuple[Issue, ...]


@dataclass(frozen=True, slots=True)
class Triage:
    category: str
    urgency: str
    next_action: str

    def as_dict(self) -> dict[str, str]:
        return {"category": self.category, "urgency": self.urgency, "next_action": self.next_action}


# --------------------------------------------------------------------------- the policy in force
@dataclass(frozen=True)
class Policy:
    """The numbers and catalogue the rules read. ``MONTH_ONE`` is the policy the training data
    follows; the simulated second month (``triage_month2``) replaces some of them (a shorter
    refund window, a new product line, new known issues) and labels with the same rules."""

    name: str
    hardware_refund_days: int
    store_credit_days: int
    subscription_refund_days: int
    products: Mapping[str, Product]
    known_issues: Mapping[str, KnownIssue]
    symptoms: Mapping[str, Symptom]


MONTH_ONE = Policy("month 1", HARDWARE_REFUND_DAYS, STORE_CREDIT_DAYS, SUBSCRIPTION_REFUND_DAYS,
                   PRODUCTS, KNOWN_ISSUES, SYMPTOMS)


# --------------------------------------------------------------------------- rules
def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def version_affected(issue_id: str, stated: str | None, policy: Policy = MONTH_ONE) -> bool:
    """Whether a stated version falls in a known issue's range. Unstated counts as affected
    (labelling guide: give the known issue the benefit of the doubt); "latest" means the
    product's current version from the products page."""
    ki = policy.known_issues[issue_id]
    if stated is None:
        return True
    version = policy.products[ki.product].current_version if stated == "latest" else stated
    assert version is not None, f"{ki.product} has no current version"
    return parse_version(ki.first) <= parse_version(version) <= parse_version(ki.last)


def is_hazard(issue: Issue, policy: Policy = MONTH_ONE) -> bool:
    return issue.kind == "device_fault" and policy.symptoms[issue.symptom or ""].severity == "hazard"


def _device_fault(issue: Issue, policy: Policy) -> tuple[str, str, str]:
    symptom = policy.symptoms[issue.symptom or ""]
    if symptom.severity == "hazard":
        return "technical_issue", "critical", "escalate_engineering"
    if symptom.known_issue and version_affected(symptom.known_issue, issue.version, policy):
        return "known_issue", "normal", "send_workaround"
    return "technical_issue", SEVERITY_URGENCY[symptom.severity], "escalate_engineering"


def _hardware_return(issue: Issue, policy: Policy) -> tuple[str, str, str]:
    days = issue.days or 0
    if days <= policy.hardware_refund_days:
        return "refund", "normal", "issue_refund"
    if days <= policy.store_credit_days:
        return "refund", "normal", "offer_store_credit"
    # Past both windows: a faulty item is a warranty replacement, anything else is declined.
    return "refund", "normal", "reship_order" if issue.defective else "answer_question"


def _subscription_refund(issue: Issue, policy: Policy) -> tuple[str, str, str]:
    if (issue.days or 0) <= policy.subscription_refund_days:
        return "refund", "normal", "issue_refund"
    return "refund", "normal", "offer_store_credit"


def _late_delivery(issue: Issue, policy: Policy) -> tuple[str, str, str]:
    window = DELIVERY_DAYS[issue.method or DEFAULT_SHIPPING]
    if (issue.days or 0) <= window:
        return "shipping", "low", "answer_question"  # still on time: share the tracking link
    return "shipping", "normal", "reship_order"  # overdue counts as lost


def label_issue(issue: Issue, policy: Policy = MONTH_ONE) -> tuple[str, str, str]:
    """(category, base urgency, action) of one issue, before the ticket-level rules."""
    if issue.kind in FIXED_RULES:
        return FIXED_RULES[issue.kind]
    rule = {
        "hardware_return": _hardware_return,
        "subscription_refund": _subscription_refund,
        "late_delivery": _late_delivery,
        "device_fault": _device_fault,
    }[issue.kind]
    return rule(issue, policy)


def label_ticket(facts: TicketFacts, policy: Policy = MONTH_ONE) -> Triage:
    """The ticket's label per the labelling guide, under ``policy`` (default: month 1's).

    Category and action come from the primary issue: a safety hazard if there is one, else
    the issue whose category has the highest priority. Urgency is the highest base urgency
    among all issues, raised one level for the Enterprise plan and one for a repeat contact,
    capped at critical. Tone ("URGENT!!!") never changes urgency.
    """
    labelled = [label_issue(i, policy) for i in facts.issues]
    hazards = [lab for i, lab in zip(facts.issues, labelled, strict=True) if is_hazard(i, policy)]
    category, _, action = hazards[0] if hazards else min(
        labelled, key=lambda lab: CATEGORY_PRIORITY.index(lab[0]))
    level = max(URGENCIES.index(lab[1]) for lab in labelled)
    level += (facts.plan == BUMP_PLAN) + facts.repeat_contact
    return Triage(category, URGENCIES[min(level, len(URGENCIES) - 1)], action)
