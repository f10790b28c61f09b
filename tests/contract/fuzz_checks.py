"""Schemathesis's check that a request the OpenAPI document allows is not refused as malformed, with the few
rules of the server that no JSON Schema can state (the fuzzer's hooks module: `SCHEMATHESIS_HOOKS`).

Schemathesis's own `positive_data_acceptance` counts every 400 and 422 to a schema-valid request as a mismatch.
This one does too, except an answer whose message names one of `BEYOND_SCHEMA`: each is a rule about a value's
meaning (a CIDR's host bits, a certificate that parses, weights that sum to 100) that a schema cannot state.
"""

from __future__ import annotations

import json

import schemathesis

# A refusal whose message holds one of these is a rule beyond what a JSON Schema can say.
BEYOND_SCHEMA = {
    "has host bits set": "a CIDR's host bits are zero (a pattern cannot do the arithmetic)",
    "invalid certificate signing request": "a CSR must parse and be signed by its key",
    "is not a PEM": "a certificate or key must parse",
    "the body must be a": "an imported image is a tar archive (or a qcow2 disk for a VM)",
    "is in the past": "an expiry is later than now (a schema does not know the time)",
    "weights must sum to 100": "a policy's split weights sum to 100",
    "is greater than port_max": "a rule's port range is in order",
    "in the stack file": "a stack file's text is valid YAML, JSON or HCL of a stack",
    "is in both env and secret_env": "a name is plain or secret (two objects' keys apart)",
    "is listed twice": "items apart by one field (JSON Schema's uniqueItems compares whole items)",
    "is used twice in mesh": "the app port and the upstreams' local ports apart",
    "is below cpus": "a VM's max_cpus at least its cpus (one field against another)",
    "is below memory_mb": "a VM's max_memory_mb at least its memory_mb",
    "bytes; at most": "sizes in UTF-8 bytes, and their totals (a schema counts characters, one by one)",
    "bytes as JSON; at most": "cloud_init's size as JSON",
    "holds a NUL character": "no text holds NUL (the document's description says it once, for every string)",
}


def _message(response: schemathesis.Response) -> str:
    try:
        return str(json.loads(response.text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text


@schemathesis.check
def document_takes_what_it_allows(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return
    message = _message(response)
    if any(rule in message for rule in BEYOND_SCHEMA):
        return
    raise AssertionError(f"a request the document allows was refused {response.status_code}: {message}")
