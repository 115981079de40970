"""One audit log as one OCSF event (issue #10): the `ocsf` stream format and `GET ... format=ocsf`.

Pinned to OCSF 1.3.0: a release the common OCSF consumers ingest, whose schema can be checked offline
(the tests validate every object against the exported 1.3.0 schema). docs/streams.md publishes the
mapping and says how to move to another release.

Classes: Authentication (3002) for sign-in and sign-out actions, Account Change (3001) for accounts
created, deleted, enabled, disabled, locked or given a new password, User Access Management (3005) for
role changes, Group Management (3006) for group membership, and API Activity (6003) for everything else,
with its activity from the action's verb. An IAM class needs the account (or group) it acts on; an event
that does not name one stays API Activity, so every object is valid. Fields without an OCSF home go
under `unmapped`, so nothing of the log is lost.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from functools import lru_cache
from ipaddress import ip_address
from typing import Any, NamedTuple

import orjson

from auditkeep import __version__

OCSF_VERSION = "1.3.0"
PRODUCT = {"name": "auditkeep", "vendor_name": "auditkeep", "version": __version__}

API_ACTIVITY, AUTHENTICATION, ACCOUNT_CHANGE, USER_ACCESS, GROUP_MANAGEMENT = 6003, 3002, 3001, 3005, 3006
CLASSES: dict[int, tuple[str, int, str]] = {  # class_uid -> (class_name, category_uid, category_name)
    API_ACTIVITY: ("API Activity", 6, "Application Activity"),
    AUTHENTICATION: ("Authentication", 3, "Identity & Access Management"),
    ACCOUNT_CHANGE: ("Account Change", 3, "Identity & Access Management"),
    USER_ACCESS: ("User Access Management", 3, "Identity & Access Management"),
    GROUP_MANAGEMENT: ("Group Management", 3, "Identity & Access Management"),
}
ACTIVITIES: dict[int, dict[int, str]] = {  # the activity_id captions this mapping emits, per class
    API_ACTIVITY: {1: "Create", 2: "Read", 3: "Update", 4: "Delete"},
    AUTHENTICATION: {1: "Logon", 2: "Logoff"},
    ACCOUNT_CHANGE: {1: "Create", 2: "Enable", 3: "Password Change", 4: "Password Reset", 5: "Disable",
                     6: "Delete", 9: "Lock"},
    USER_ACCESS: {1: "Assign Privileges", 2: "Revoke Privileges"},
    GROUP_MANAGEMENT: {3: "Add User", 4: "Remove User"},
}
OTHER = 99

VERBS: dict[str, int] = {
    **dict.fromkeys(("create", "add", "new"), 1),
    **dict.fromkeys(("read", "view", "get", "list", "export", "download", "search"), 2),
    **dict.fromkeys(("update", "edit", "change", "set", "rename"), 3),
    **dict.fromkeys(("delete", "remove", "revoke", "purge"), 4),
}
ACCOUNT_VERBS: dict[str, int] = {
    **dict.fromkeys(("create", "add", "new"), 1),
    **dict.fromkeys(("enable", "activate", "unlock"), 2),
    **dict.fromkeys(("disable", "deactivate", "suspend"), 5),
    **dict.fromkeys(("delete", "remove", "purge"), 6),
    "lock": 9,
}
ACCOUNTS = frozenset({"user", "users", "account", "accounts", "service_account", "service_accounts",
                      "serviceaccount", "member", "members"})
ROLES = frozenset({"role", "roles", "privilege", "privileges", "permission", "permissions"})
ROLE_VERBS: dict[str, int] = {
    **dict.fromkeys(("assign", "grant", "add", "set", "change", "update"), 1),
    **dict.fromkeys(("revoke", "remove", "unassign", "delete"), 2),
}
GROUPS = frozenset({"group", "groups", "team", "teams"})
MEMBER_VERBS: dict[str, int] = {**dict.fromkeys(("add", "join", "invite"), 3),
                                **dict.fromkeys(("remove", "leave", "kick"), 4)}
STATUSES: dict[str, int] = {
    **dict.fromkeys(("success", "succeeded", "successful", "ok", "allowed", "pass", "passed"), 1),
    **dict.fromkeys(("failure", "failed", "fail", "error", "denied", "rejected", "forbidden",
                     "unauthorized"), 2),
}
# http_method is an enum in 1.3.0 (PATCH is not in it): any other request_type stays under unmapped.
HTTP_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "TRACE"})
STATUS_CAPTIONS = {0: "Unknown", 1: "Success", 2: "Failure"}
SEVERITY_CAPTIONS = {1: "Informational", 2: "Low"}

_SIGN_IN = re.compile(r"(?:log|sign)[-_ ]?(?:in|on)(?:[-_ ].*)?")
_SIGN_OUT = re.compile(r"(?:log|sign)[-_ ]?(?:out|off)(?:[-_ ].*)?")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TOKEN = re.compile(r"[^a-z0-9]+")
_SEGMENT = re.compile(r"[./:]")
# Fields placed elsewhere in the object; every other field of the record goes under `unmapped`.
_MAPPED = frozenset({"action", "client_ip", "event_uuid", "log_entry", "referer", "status", "timestamp", "url",
                     "user_agent", "seq"})


class Shape(NamedTuple):
    """What an action says about its event: the class it asks for, its activity, the API verb."""

    class_uid: int
    activity_id: int
    api_activity: int  # the activity as API Activity, the fallback when the IAM class lacks its target
    verb: str  # the action's last segment, the activity_name of an Other activity


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.split(_CAMEL.sub("_", text).lower()) if t]


@lru_cache(maxsize=4096)
def shape(action: str) -> Shape:
    """The class and activity `action` maps to (docs/streams.md has the table)."""
    segments = [s for s in _SEGMENT.split(action) if s]
    last = segments[-1] if segments else ""
    words = _tokens(last)
    api = next((VERBS[w] for w in words if w in VERBS), OTHER)
    plain = _CAMEL.sub("_", last).lower()
    if _SIGN_IN.fullmatch(plain):
        return Shape(AUTHENTICATION, 1, api, last)
    if _SIGN_OUT.fullmatch(plain):
        return Shape(AUTHENTICATION, 2, api, last)
    every = {w for s in segments for w in _tokens(s)}
    role = next((ROLE_VERBS[w] for w in words if w in ROLE_VERBS), None)
    if every & ROLES and role is not None:
        return Shape(USER_ACCESS, role, api, last)
    membership = next((MEMBER_VERBS[w] for w in words if w in MEMBER_VERBS), None)
    if every & GROUPS and membership is not None:
        return Shape(GROUP_MANAGEMENT, membership, api, last)
    resource = "_".join(_tokens(segments[-2])) if len(segments) > 1 else ""
    if resource in ACCOUNTS:
        if "password" in words:
            return Shape(ACCOUNT_CHANGE, 4 if "reset" in words else 3, api, last)
        if (activity := next((ACCOUNT_VERBS[w] for w in words if w in ACCOUNT_VERBS), None)) is not None:
            return Shape(ACCOUNT_CHANGE, activity, api, last)
    return Shape(API_ACTIVITY, api, api, last)


@lru_cache(maxsize=1024)
def _midnight_ms(day: str) -> int:
    return calendar.timegm(datetime.fromisoformat(day).timetuple()) * 1000


def epoch_ms(timestamp: str) -> int:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` as milliseconds since the epoch (sub-millisecond digits dropped)."""
    if len(timestamp) == 27 and timestamp[10] == "T" and timestamp[26] == "Z":
        # The API's own form: slicing it is several times faster than parsing it, for the 100k-event export.
        hours, minutes, seconds = int(timestamp[11:13]), int(timestamp[14:16]), int(timestamp[17:19])
        return (_midnight_ms(timestamp[:10]) + ((hours * 60 + minutes) * 60 + seconds) * 1000
                + int(timestamp[20:23]))
    moment = datetime.fromisoformat(timestamp)
    return calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000


def _status(value: Any) -> tuple[int, dict[str, Any]]:
    if value is None:
        return 0, {"status": "Unknown", "status_id": 0}
    text = str(value)
    status_id = STATUSES.get(text.strip().lower(), OTHER)
    if status_id == OTHER:
        return OTHER, {"status": text, "status_id": OTHER}
    fields: dict[str, Any] = {"status": STATUS_CAPTIONS[status_id], "status_id": status_id}
    if text != fields["status"].lower():
        fields["status_detail"] = text  # the source's own word ("denied"), kept beside the normalized one
    return status_id, fields


@lru_cache(maxsize=65536)  # a log's addresses repeat; parsing one is a good part of an event's mapping
def _endpoint(client_ip: str | None) -> dict[str, Any]:
    # Erased addresses read "[erased]": not an IP, so it is the endpoint's name instead.
    try:
        return {"ip": str(ip_address(client_ip))} if client_ip is not None else {"name": "unknown"}
    except ValueError:
        return {"name": str(client_ip)}


def _actor_user(log: dict[str, Any]) -> dict[str, Any] | None:
    user: dict[str, Any] = {}
    if (email := log.get("user_email")) is not None:
        user["email_addr"] = user["name"] = str(email)
    if (user_id := log.get("user_id")) is not None:
        user["uid"] = str(user_id)
    return user or None


def _target(log: dict[str, Any]) -> dict[str, Any] | None:
    object_id = log.get("object_id")
    return {"uid": str(object_id)} if object_id is not None else None


def _payload_member(log: dict[str, Any]) -> dict[str, Any] | None:
    payload = log.get("payload")
    if not isinstance(payload, dict):
        return None
    member: dict[str, Any] = {}
    if isinstance(email := payload.get("user_email", payload.get("member_email")), str):
        member["email_addr"] = member["name"] = email
    if isinstance(uid := payload.get("user_id", payload.get("member_id")), (str, int)) and not isinstance(uid, bool):
        member["uid"] = str(uid)
    return member or None


def _privileges(log: dict[str, Any]) -> list[str] | None:
    payload = log.get("payload")
    if not isinstance(payload, dict):
        return None
    if isinstance(role := payload.get("role"), str):
        return [role]
    for key in ("roles", "privileges"):
        value = payload.get(key)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
    return None


def _iam_fields(log: dict[str, Any], s: Shape) -> dict[str, Any] | None:
    """The class-specific attributes of `s`'s IAM class, or None when the event lacks what it requires."""
    if s.class_uid == AUTHENTICATION:
        user = _actor_user(log) or _target(log)
        return None if user is None else {"user": user}
    if s.class_uid == ACCOUNT_CHANGE:
        user = _target(log) or _actor_user(log)
        return None if user is None else {"user": user}
    if s.class_uid == USER_ACCESS:
        user, privileges = _target(log), _privileges(log)
        return None if user is None or privileges is None else {"user": user, "privileges": privileges}
    group, member = _target(log), _payload_member(log)
    if group is None or member is None or str(log.get("object_type", "")).lower() not in GROUPS:
        return None
    return {"group": group, "user": member}


def _metadata(log: dict[str, Any], action: str, tenant: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"event_code": action, "product": PRODUCT, "tenant_uid": tenant,
                                "version": OCSF_VERSION}
    if (uuid := log.get("event_uuid")) is not None:
        metadata["uid"] = uuid
    if (seq := log.get("seq")) is not None:
        metadata["sequence"] = seq
    if (timestamp := log.get("timestamp")) is not None:
        metadata["original_time"] = timestamp  # the microseconds `time` (milliseconds) cannot hold
    return metadata


def _http_request(log: dict[str, Any]) -> dict[str, Any]:
    http: dict[str, Any] = {}
    if (url := log.get("url")) is not None:
        http["url"] = {"url_string": url}
    for source, target in (("user_agent", "user_agent"), ("referer", "referrer")):
        if (value := log.get(source)) is not None:
            http[target] = value
    if log.get("request_type") in HTTP_METHODS:
        http["http_method"] = log["request_type"]
    return http


def _class_attributes(log: dict[str, Any], class_uid: int, specific: dict[str, Any] | None, action: str,
                      tenant: str) -> tuple[dict[str, Any], set[str]]:
    """The attributes of the class itself, and the log's fields they hold (the rest goes under unmapped)."""
    consumed = set(_MAPPED) | ({"request_type"} if log.get("request_type") in HTTP_METHODS else set())
    actor = _actor_user(log)
    if class_uid == API_ACTIVITY:
        # API Activity requires an actor: without a user, the application (the log's source) acted.
        attributes: dict[str, Any] = {
            "actor": {"user": actor} if actor else {"app_name": str(log.get("source") or tenant)},
            "api": {"operation": action},
        }
        consumed |= {"user_email", "user_id"}
        if (object_id := log.get("object_id")) is not None:  # a resource needs its uid
            resource = {"uid": str(object_id)}
            if (object_type := log.get("object_type")) is not None:
                resource["type"] = str(object_type)
            attributes["resources"] = [resource]
            consumed |= {"object_type", "object_id"}
        return attributes, consumed
    assert specific is not None
    attributes = dict(specific)
    if class_uid == AUTHENTICATION:
        # The class needs a service or dst_endpoint: the organization's application was signed in to.
        attributes["service"] = {"name": tenant}
    if actor is not None and (class_uid == ACCOUNT_CHANGE or specific["user"] == actor):
        if class_uid == ACCOUNT_CHANGE:
            attributes["actor"] = {"user": actor}
        consumed |= {"user_email", "user_id"}
    if specific.get("user") == _target(log) or "group" in specific:
        consumed.add("object_id")  # the account or group acted on; object_type stays to say what it is
    return attributes, consumed


def to_ocsf(log: dict[str, Any], tenant: str) -> dict[str, Any]:
    """One log (the GET's object, with `seq`, `prev_hash`, `hash` when it has them) as one OCSF object."""
    action = str(log.get("action") or "")
    s = shape(action)
    class_uid, activity_id = s.class_uid, s.activity_id
    specific = None if class_uid == API_ACTIVITY else _iam_fields(log, s)
    if specific is None:
        class_uid, activity_id = API_ACTIVITY, s.api_activity
    status_id, status = _status(log.get("status"))
    severity_id = 2 if status_id == 2 else 1
    class_name, category_uid, category_name = CLASSES[class_uid]
    activity_name = ACTIVITIES[class_uid].get(activity_id, s.verb or "Other")
    timestamp = log.get("timestamp")
    event: dict[str, Any] = {
        "activity_id": activity_id, "activity_name": activity_name,
        "category_name": category_name, "category_uid": category_uid,
        "class_name": class_name, "class_uid": class_uid,
        "metadata": _metadata(log, action, tenant),
        "severity": SEVERITY_CAPTIONS[severity_id], "severity_id": severity_id,
        "src_endpoint": _endpoint(log.get("client_ip")),
        "time": epoch_ms(timestamp) if timestamp is not None else 0,
        "type_name": f"{class_name}: {'Other' if activity_id == OTHER else activity_name}",
        "type_uid": class_uid * 100 + activity_id,
        **status,
    }
    if (message := log.get("log_entry")) is not None:
        event["message"] = message
    if http := _http_request(log):
        event["http_request"] = http
    attributes, consumed = _class_attributes(log, class_uid, specific, action, tenant)
    event.update(attributes)
    unmapped = {k: v for k, v in log.items() if k not in consumed and v is not None}
    if unmapped:
        event["unmapped"] = unmapped
    return event


def encode(event: dict[str, Any]) -> str:
    """The object's JSON text: keys sorted at every level, so the same event gives the same bytes."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS).decode()


def convert(records: list[str], tenant: str) -> list[str]:
    """Datafold JSON texts (with integrity fields) as OCSF JSON texts."""
    return [encode(to_ocsf(orjson.loads(r), tenant)) for r in records]
