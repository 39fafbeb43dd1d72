#!/usr/bin/env python3
"""Check the create-customer contract in schemas/.

    scripts/check-schemas.py [DIR_OR_FILE ...]

1. the four schemas/*.schema.json are valid JSON Schemas (draft 2020-12) with inline examples;
2. every file in schemas/examples/ and every schema's inline `examples` validates against the schema
   named by its file-name prefix: create-customer., customer-created., customer-create-failed.,
   plan-catalog.;
3. every *.json (one document) and *.jsonl (one document per line) in the given directories, or
   given as files, validates the same way; files named reply.* or replies.* pick the reply schema
   by the document's `type` (the test suite writes the replies it received there);
4. negative cases must be rejected, proving the schemas are not vacuous;
5. schemas/asyncapi.yaml parses and each of its `$ref`s resolves.

Replies are also checked for what JSON Schema cannot say: keys in the contract's order, the
idempotency key computed from merchantId and externalId, and ids that must agree. Plan catalogs are
checked for duplicate plan ids.

Works with Debian's python3-jsonschema (4.10, no `referencing`) and newer releases: the schemas are
self-contained (local `#/$defs` refs only), so no registry is needed.
Prints `schemas: N passed, M failed` last; exits 1 if anything failed.
"""

import copy
import functools
import hashlib
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

from jsonschema import Draft202012Validator, ValidationError, validators

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
EXAMPLES = SCHEMAS / "examples"

# File-name prefix -> schema file.
PREFIXES = {
    "create-customer.": "create-customer.schema.json",
    "customer-created.": "customer-created.schema.json",
    "customer-create-failed.": "customer-create-failed.schema.json",
    "plan-catalog.": "plan-catalog.schema.json",
}
REPLY_PREFIXES = ("reply.", "replies.")
REPLY_TYPES = {"CustomerCreated": "customer-created.schema.json",
               "CustomerCreateFailed": "customer-create-failed.schema.json"}


# --- ECMA 262 patterns ---------------------------------------------------------------------------
# JSON Schema patterns are ECMA 262 regular expressions. Python's `re` differs in ways that would let
# bad values through: `\d` and `\s` are Unicode-wide, and `$` also matches before a final newline
# ("94105\n" would pass the zip pattern). Translate those constructs before matching.
ECMA_SPACE = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


@functools.lru_cache(maxsize=None)
def ecma_regex(pattern):
    out, in_class, i = [], False, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            esc = pattern[i:i + 2]
            if esc == r"\d":
                out.append("0-9" if in_class else "[0-9]")
            elif esc == r"\s":
                out.append(ECMA_SPACE if in_class else f"[{ECMA_SPACE}]")
            else:
                out.append(esc)
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        elif ch == "$" and not in_class:
            ch = r"\Z"
        out.append(ch)
        i += 1
    return re.compile("".join(out))


def ecma_pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Validator = validators.extend(Draft202012Validator, {"pattern": ecma_pattern})


# --- semantic checks beyond JSON Schema -------------------------------------------------------------
def deref(root, node):
    """Follow local `#/$defs/...` refs (the only kind the schemas use)."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local refs are supported, got {ref}"
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def key_order_problems(root, node, instance, path="$"):
    """Reply objects with fixed keys must list them in the schema's (the contract's) order."""
    node = deref(root, node)
    if isinstance(instance, dict) and isinstance(node, dict) and "properties" in node:
        props = node["properties"]
        expected = [k for k in props if k in instance] + [k for k in instance if k not in props]
        if list(instance) != expected:
            yield f"{path}: keys out of order: got {list(instance)}, expected {expected}"
        for k, v in instance.items():
            if k in props:
                yield from key_order_problems(root, props[k], v, f"{path}.{k}")
    elif isinstance(instance, list) and isinstance(node, dict) and "items" in node:
        for i, v in enumerate(instance):
            yield from key_order_problems(root, node["items"], v, f"{path}[{i}]")


def parse_ts(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")


def idempotency_key(merchant_id, external_id):
    return hashlib.sha256(f"customer.create\n{merchant_id}\n{external_id}".encode()).hexdigest()


def created_problems(doc):
    """CustomerCreated: the idempotency key and the ids, dates and flags that must agree."""
    c, outcome = doc["customer"], doc["defaultPlan"]
    if doc["idempotencyKey"] != idempotency_key(c["merchantId"], c["externalId"]):
        yield "idempotencyKey is not sha256(\"customer.create\\n\" + merchantId + \"\\n\" + externalId)"
    for where in ("activeSubscriptions", "upcomingSubscriptions"):
        for i, s in enumerate(c[where]):
            at = f"customer.{where}[{i}]"
            if s["customerId"] != c["id"]:
                yield f"{at}.customerId is not customer.id"
            if s["merchantId"] != c["merchantId"]:
                yield f"{at}.merchantId is not customer.merchantId"
            if s["planId"] != s["plan"]["id"]:
                yield f"{at}.planId is not plan.id"
            if s["planId"] != outcome["planId"]:
                yield f"{at}.planId is not defaultPlan.planId"
            if (s["status"] == "pendingActivation") != (where == "upcomingSubscriptions"):
                yield f"{at}: pendingActivation subscriptions, and only those, belong in upcomingSubscriptions"
            if s["isTrial"]:
                days = s["plan"]["trialDays"]
                if s["endDate"] is None or parse_ts(s["endDate"]) - parse_ts(s["startDate"]) != timedelta(days=days):
                    yield f"{at}.endDate is not startDate + {days} days"
            elif s["endDate"] is not None and s["status"] != "ended":
                yield f"{at}.endDate is set although the subscription is no trial and has not ended"
            paid = s["plan"]["price"] > 0
            gateway = ("Stripe" if c["stripeId"] else "QuickBooks" if c["quickBooksId"] else None) if paid else None
            if s["paymentGateway"] != gateway:
                yield f"{at}.paymentGateway is {s['paymentGateway']!r}, expected {gateway!r}"
            if where == "upcomingSubscriptions" and s["startDate"] != s["plan"]["availableFrom"]:
                yield f"{at}.startDate is not plan.availableFrom"
    subscriptions = c["activeSubscriptions"] + c["upcomingSubscriptions"]
    eligible = not any(s["isTrial"] or s["plan"]["price"] > 0 for s in subscriptions)
    if c["isEligibleForTrial"] != eligible:
        yield f"isEligibleForTrial must be {eligible}: true only without paid or trial subscriptions"
    if outcome["reason"] == "payment_method_required" and (c["stripeId"] or c["quickBooksId"]):
        yield "payment_method_required although the customer has a stripeId or quickBooksId"
    for side in ("billing", "shipping"):
        state = c[f"{side}State"]
        if c[f"{side}Country"] == "US" and state is not None and not re.fullmatch("[A-Z]{2}", state):
            yield f"customer.{side}State must be an upper-case USPS code when {side}Country is US"
    if c["updatedAt"] < c["createdAt"]:
        yield "customer.updatedAt is before createdAt"


def catalog_problems(doc):
    ids = [p["id"] for p in doc["plans"]]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        yield f"plan id {dup!r} appears more than once"


EXTRA_CHECKS = {
    "customer-created.schema.json": created_problems,
    "plan-catalog.schema.json": catalog_problems,
}
ORDERED = {"customer-created.schema.json", "customer-create-failed.schema.json"}


# --- running checks -------------------------------------------------------------------------------------
class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.schemas = {}  # file name -> schema
        self.validators = {}  # file name -> Validator

    def result(self, label, problems):
        if problems:
            self.failed += 1
            print(f"FAIL {label}")
            for p in problems[:8]:
                print(f"     {p}")
            if len(problems) > 8:
                print(f"     ... and {len(problems) - 8} more")
        else:
            self.passed += 1

    def problems(self, schema_name, doc):
        """Everything wrong with `doc` as an instance of `schema_name`; empty when it conforms."""
        schema = self.schemas.get(schema_name)
        if schema is None:
            return [f"schema {schema_name} is missing or invalid"]
        errors = sorted(self.validators[schema_name].iter_errors(doc), key=lambda e: e.json_path)
        found = [f"{e.json_path}: {e.message}" for e in errors]
        if found:
            return found  # the checks below assume a document of the right shape
        if schema_name in ORDERED:
            found += key_order_problems(schema, schema, doc)
        if schema_name in EXTRA_CHECKS:
            found += EXTRA_CHECKS[schema_name](doc)
        return found

    def load_schemas(self):
        for name in PREFIXES.values():
            path = SCHEMAS / name
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
                Draft202012Validator.check_schema(schema)
                if schema.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
                    raise ValueError("$schema is not draft 2020-12")
                if not schema.get("examples"):
                    raise ValueError("no inline examples")
                for pattern in find_patterns(schema):
                    ecma_regex(pattern)
            except Exception as e:  # noqa: BLE001 - report any problem with the file
                self.result(f"schema {name}", [str(e).splitlines()[0]])
                continue
            self.schemas[name] = schema
            self.validators[name] = Validator(schema)
            self.result(f"schema {name}", [])

    def check_file(self, path):
        """Validate one *.json or *.jsonl file by its name's prefix."""
        name = path.name
        schema_name = next((s for p, s in PREFIXES.items() if name.startswith(p)), None)
        if schema_name is None and not name.startswith(REPLY_PREFIXES):
            self.result(str(path), [f"no schema for this file name (expected a prefix: {', '.join(PREFIXES)})"])
            return
        try:
            text = path.read_text(encoding="utf-8")
            if name.endswith(".jsonl"):
                docs = [(f"{path}:{n}", json.loads(line))
                        for n, line in enumerate(text.splitlines(), 1) if line.strip()]
            else:
                docs = [(str(path), json.loads(text))]
        except (OSError, ValueError) as e:
            self.result(str(path), [f"unreadable: {e}"])
            return
        if not docs:
            self.result(str(path), ["no documents"])
        for label, doc in docs:
            target = schema_name
            if target is None:
                target = REPLY_TYPES.get(doc.get("type") if isinstance(doc, dict) else None)
                if target is None:
                    self.result(label, ["not a reply: `type` is neither CustomerCreated nor CustomerCreateFailed"])
                    continue
            self.result(label, self.problems(target, doc))

    def check_dir(self, directory):
        files = sorted(p for p in directory.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            self.result(str(directory), ["no *.json or *.jsonl files to check"])
        for path in files:
            self.check_file(path)


def find_patterns(node):
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield node["pattern"]
        for v in node.values():
            yield from find_patterns(v)
    elif isinstance(node, list):
        for v in node:
            yield from find_patterns(v)


# --- negative cases ------------------------------------------------------------------------------------
DELETE = object()


def changed(doc, *edits):
    """A deep copy of `doc` with each (path, value) edit applied; DELETE removes the key."""
    doc = copy.deepcopy(doc)
    for path, value in edits:
        target = doc
        for part in path[:-1]:
            target = target[part]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return doc


def reorder(d, first):
    return {first: d[first], **{k: v for k, v in d.items() if k != first}}


def negative_cases(ex):
    """(label, schema, document) triples that must be rejected. `ex` maps example names to documents."""
    cmd, full = ex["create-customer.minimal.json"], ex["create-customer.full.json"]
    free, trial = ex["customer-created.subscribed-free.json"], ex["customer-created.trial-started.json"]
    paid = ex["customer-created.subscribed-paid.json"]
    none = ex["customer-created.no-default-plan.json"]
    conflict, invalid = ex["customer-create-failed.conflict.json"], ex["customer-create-failed.validation.json"]
    unauthorized = ex["customer-create-failed.unauthorized.json"]
    catalog = ex["plan-catalog.example.json"]
    C, R, F, P = (PREFIXES[p] for p in PREFIXES)
    sub = ("customer", "activeSubscriptions", 0)
    return [
        ("command with an unknown field", C, changed(cmd, (("phone",), "+1 555 0100"))),
        ("command with the API key in the body", C, changed(cmd, (("apiKey",), "sk_live_x"))),
        ("command without externalId", C, changed(full, (("externalId",), DELETE))),
        ("command with a null externalId", C, changed(cmd, (("externalId",), None))),
        ("command with an empty-string name", C, changed(cmd, (("name",), ""))),
        ("command with a 256-character name", C, changed(cmd, (("name",), "x" * 256))),
        ("command with a numeric stripeId", C, changed(cmd, (("stripeId",), 42))),
        ("externalId with a trailing space", C, changed(cmd, (("externalId",), "cus_1042 "))),
        ("externalId with a trailing newline", C, changed(cmd, (("externalId",), "cus_1042\n"))),
        ("externalId with a leading no-break space", C, changed(cmd, (("externalId",), "\u00a0cus_1042"))),
        ("externalId with a control character", C, changed(cmd, (("externalId",), "cus\u00071042"))),
        ("externalId with a leading byte order mark", C, changed(cmd, (("externalId",), "\ufeffcus_1042"))),
        ("externalId with a trailing zero width space", C, changed(cmd, (("externalId",), "cus_1042\u200b"))),
        ("name with a NUL", C, changed(cmd, (("name",), "Ada\u0000Lovelace"))),
        ("billingState with an escape character", C, changed(full, (("billingState",), "n\u001by"))),
        ("email with a NUL", C, changed(full, (("email",), "ada\u0000@example.com"))),
        ("zip code with 4 digits", C, changed(full, (("billingZipCode",), "9410"))),
        ("zip code in Arabic-Indic digits", C, changed(full, (("billingZipCode",), "\u0669\u0664\u0661\u0660\u0665"))),
        ("zip code with a trailing newline", C, changed(full, (("billingZipCode",), "94105\n"))),
        ("country of three letters", C, changed(full, (("billingCountry",), "USA"))),
        ("email without a dot in the domain", C, changed(full, (("email",), "ada@localhost"))),
        ("email with two @", C, changed(full, (("email",), "ada@lovelace@example.com"))),
        ("email with a space", C, changed(full, (("email",), "ada lovelace@example.com"))),
        ("reply missing customer.stripeId", R, changed(free, (("customer", "stripeId"), DELETE))),
        ("reply missing subscription.plan.availableFrom", R, changed(free, (sub + ("plan", "availableFrom"), DELETE))),
        ("reply with an extra customer key", R, changed(free, (("customer", "phone"), None))),
        ("reply timestamp without milliseconds", R, changed(free, (("customer", "createdAt"), "2025-03-14T09:26:53Z"))),
        ("reply timestamp with an offset", R, changed(free, (("customer", "updatedAt"), "2025-03-14T09:26:53.589+00:00"))),
        ("reply with an upper-case idempotency key", R, changed(free, (("idempotencyKey",), free["idempotencyKey"].upper()))),
        ("reply with a wrong idempotency key", R, changed(free, (("idempotencyKey",), none["idempotencyKey"]))),
        ("reply with an upper-case customer id", R, changed(free, (("customer", "id"), free["customer"]["id"].upper()))),
        ("reply with a lower-case billingCountry", R, changed(trial, (("customer", "billingCountry"), "us"))),
        ("reply whose subscription names another customer", R, changed(free, (sub + ("customerId",), none["customer"]["id"]))),
        ("reply whose subscription names another plan", R, changed(free, (sub + ("planId",), "growth-monthly"))),
        ("reply with customer keys out of order", R, changed(free, (("customer",), reorder(free["customer"], "email")))),
        ("reply with top-level keys out of order", R, reorder(free, "customer")),
        ("no_default_plan reply with a planId", R, changed(none, (("defaultPlan", "planId"), "starter"))),
        ("no_default_plan reply with a subscription", R, changed(none, (("customer", "activeSubscriptions"), free["customer"]["activeSubscriptions"]))),
        ("not_eligible reply without a reason", R, changed(none, (("defaultPlan",), {"outcome": "not_eligible", "planId": "starter", "reason": None}))),
        ("trial_started reply whose subscription is no trial", R, changed(trial, (sub + ("isTrial",), False))),
        ("trial_started reply still eligible for a trial", R, changed(trial, (("customer", "isEligibleForTrial"), True))),
        ("US state not normalised to upper case", R, changed(trial, (("customer", "billingState"), "va"))),
        ("open-ended subscription with an endDate", R, changed(free, (sub + ("endDate",), "2025-04-14T09:26:53.589Z"))),
        ("free subscription with a payment gateway", R, changed(free, (sub + ("paymentGateway",), "Stripe"))),
        ("paid subscription through QuickBooks despite a stripeId", R, changed(paid, (sub + ("paymentGateway",), "QuickBooks"))),
        ("trial_started reply with the wrong endDate", R, changed(trial, (sub + ("endDate",), trial["customer"]["activeSubscriptions"][0]["startDate"].replace("2025-05", "2025-04")))),
        ("subscribed reply with an unknown subscription status", R, changed(free, (sub + ("status",), "paused"))),
        ("failure with an unknown error code", F, changed(unauthorized, (("error", "code"), "internal_error"))),
        ("failure validation_failed without fields", F, changed(invalid, (("error", "fields"), []))),
        ("failure with fields for another code", F, changed(conflict, (("error", "fields"), invalid["error"]["fields"]))),
        ("failure external_id_conflict without existingCustomerId", F, changed(conflict, (("error", "existingCustomerId"), None))),
        ("failure unauthorized with an idempotency key", F, changed(unauthorized, (("idempotencyKey",), conflict["idempotencyKey"]))),
        ("failure with an unknown field error code", F, changed(invalid, (("error", "fields", 0, "code"), "bad"))),
        ("failure missing error.existingCustomerId", F, changed(unauthorized, (("error", "existingCustomerId"), DELETE))),
        ("failure with error keys out of order", F, changed(conflict, (("error",), reorder(conflict["error"], "fields")))),
        ("catalog with two default plans", P, changed(catalog, (("plans", 1, "default"), True))),
        ("catalog whose default plan is private", P, changed(catalog, (("plans", 0, "isPrivate"), True))),
        ("catalog whose default plan is archived", P, changed(catalog, (("plans", 0, "status"), "archived"))),
        ("catalog plan without `default`", P, changed(catalog, (("plans", 1, "default"), DELETE))),
        ("catalog plan in EUR", P, changed(catalog, (("plans", 1, "currency"), "EUR"))),
        ("catalog plan with a fractional price", P, changed(catalog, (("plans", 1, "price"), 29.99))),
        ("catalog plan with a lower-case country", P, changed(catalog, (("plans", 3, "availableCountries"), ["de"]))),
        ("catalog plan with a three-letter country", P, changed(catalog, (("plans", 3, "availableCountries"), ["DEU"]))),
        ("catalog plan id with a trailing space", P, changed(catalog, (("plans", 1, "id"), "growth-monthly "))),
        ("catalog availableFrom without a time", P, changed(catalog, (("plans", 4, "availableFrom"), "2026-01-01"))),
        ("catalog with duplicate plan ids", P, changed(catalog, (("plans", 2, "id"), catalog["plans"][1]["id"]))),
    ]


# --- AsyncAPI -------------------------------------------------------------------------------------------
def asyncapi_problems(path):
    try:
        import yaml
    except ImportError:
        return ["python3-yaml is not installed (Debian/Ubuntu: apt-get install -y python3-yaml)"]
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        return [f"does not parse: {e}"]
    if not isinstance(doc, dict) or doc.get("asyncapi") != "3.0.0":
        return ["not an AsyncAPI 3.0.0 document"]
    problems = []

    def pointer(target, fragment, ref):
        for part in filter(None, fragment.split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            elif isinstance(target, dict) and part in target:
                target = target[part]
            else:
                problems.append(f"$ref {ref}: {fragment} does not resolve")
                return

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                file_part, _, fragment = ref.partition("#")
                if file_part:
                    target_path = (path.parent / file_part).resolve()
                    if not target_path.is_file():
                        problems.append(f"$ref {ref}: no such file")
                    else:
                        try:
                            pointer(json.loads(target_path.read_text(encoding="utf-8")), fragment, ref)
                        except ValueError as e:
                            problems.append(f"$ref {ref}: not JSON ({e})")
                else:
                    pointer(doc, fragment, ref)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    payload_files = {
        (path.parent / m["payload"]["$ref"].partition("#")[0]).resolve().name
        for m in (doc.get("components", {}).get("messages") or {}).values()
        if isinstance(m, dict) and isinstance(m.get("payload"), dict) and "$ref" in m["payload"]
    }
    for name in ("create-customer.schema.json", *REPLY_TYPES.values()):
        if name not in payload_files:
            problems.append(f"no message in components.messages has payload $ref ./{name}")
    return problems


def main(argv):
    checker = Checker()
    checker.load_schemas()

    examples = {}
    for path in sorted(EXAMPLES.glob("*.json")):
        try:
            examples[path.name] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            pass  # reported by check_file
        checker.check_file(path)
    for name, schema in checker.schemas.items():
        for i, doc in enumerate(schema.get("examples", [])):
            checker.result(f"{name} examples[{i}]", checker.problems(name, doc))

    try:
        cases = negative_cases(examples)
    except (KeyError, IndexError, TypeError) as e:
        checker.result("negative cases", [f"an example they start from is missing or changed: {e!r}"])
        cases = []
    for label, schema_name, doc in cases:
        accepted = not checker.problems(schema_name, doc)
        checker.result(f"must reject: {label}", ["was accepted"] if accepted else [])

    checker.result("asyncapi.yaml", asyncapi_problems(SCHEMAS / "asyncapi.yaml"))

    for arg in argv:
        target = Path(arg)
        if target.is_dir():
            checker.check_dir(target)
        elif target.is_file():
            checker.check_file(target)
        else:
            checker.result(arg, ["no such file or directory"])

    print(f"schemas: {checker.passed} passed, {checker.failed} failed")
    return 1 if checker.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
