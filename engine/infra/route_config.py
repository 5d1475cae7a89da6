"""`[[routes]]` in config.toml: where accepted messages are delivered onward, which ones, and how hard to try."""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal, final

import msgspec

from engine.core.errors import ConfigError
from engine.core.model import EVENT_KINDS, Lane

__all__ = ["Address", "RouteConfig", "parse_destination"]

_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_MIB = 1024 * 1024


@final
class RouteConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One route: a filter, an optional rewrite, a destination, and its delivery policy.

    Attributes:
        name: names the route in `vigil routes`, its metrics and its state
            directory (`routes/NAME` under the data directory).
        destination: `mllp://HOST:PORT` (`mllps://` for TLS, verified against
            `tls_ca_file` or the system's CAs), `folder:PATH` (one file per
            message, written atomically; PATH relative to the configuration
            file), or `nats:SUBJECT` (published through JetStream with the
            node's `[nats]` servers; a stream must take the subject), or
            `http://…` / `https://…` (a FHIR R4 server's base URL: each
            message goes as a transaction Bundle, or a FHIR message as it
            came; with `transform = "original"`, HL7 v2 over HTTP is POSTed
            to the URL).
        transform: `original` (the message as logged) or `fhir` (HL7 v2 as a
            FHIR R4 transaction Bundle, ids derived from what each resource
            is, so a message delivered twice changes nothing downstream).
        timezone: where times sent without an offset were written (IANA
            name): FHIR needs the offset, so the transform adds this zone's.
        http_token_file: a bearer token for an HTTP destination, read from
            this file (relative to the configuration file), never written here.
        lanes, message_types, senders, event_kinds: the filter; empty means
            all. Types are MSH-9 as `CODE^EVENT` (`ORU^R01`) or a FHIR
            resource type, and may end in `*` (`ADT^*`); senders are
            `MSH-3^MSH-4` (`LAB^GENHOSP`), `*` allowed at the end too; event
            kinds are the clinical events Vigil read from a message (`result`,
            `admitted`, `medication_ordered`, ...): a message with any of them matches.
        receiving_application, receiving_facility: when set, MSH-5 / MSH-6 of
            the delivered copy are rewritten to them (the log keeps the original).
        order: `lanes` (a critical message goes ahead of every other patient's
            backlog) or `fifo` (log order across patients, as most engines do).
        connections: MLLP connections used at once (different patients go in
            parallel; one patient's messages are never in flight together).
        on_refused: after an AR (or a write the folder refuses for good), `hold`
            that patient's later messages on this route until an operator
            retries or skips the refused one, or let them `continue`.
        ack_timeout_s: an ACK not back in this long: the connection is closed
            and the message sent again (the receiver may see it twice).
        retry_base_s, retry_max_s: an AE is retried after a capped exponential
            back-off with full jitter; a connection that cannot be made is
            tried again the same way.
        backlog_age_alert_s: an undelivered message older than this raises an
            alert (`[alerts] routes`: rule `route_backlog_age`).
        pending_bytes_max: undelivered messages held in memory; past it the
            route reads no further ahead in the log until the backlog drains.
        state_save_interval_s: how often the delivered positions are made
            durable: after a crash, what was delivered since is delivered again.
    """

    name: Annotated[str, msgspec.Meta(pattern=_NAME)]
    destination: str
    lanes: tuple[Lane, ...] = ()
    message_types: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()
    event_kinds: tuple[str, ...] = ()
    receiving_application: str = ""
    receiving_facility: str = ""
    order: Literal["lanes", "fifo"] = "lanes"
    connections: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    on_refused: Literal["hold", "continue"] = "hold"
    ack_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    retry_base_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 0.5
    retry_max_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 30.0
    backlog_age_alert_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86_400)] = 300.0
    pending_bytes_max: Annotated[int, msgspec.Meta(ge=_MIB, le=16 * 1024 * _MIB)] = 256 * _MIB
    state_save_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.05
    tls_ca_file: str = ""
    transform: Literal["original", "fhir"] = "original"
    timezone: str = "UTC"
    http_token_file: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.event_kinds) - EVENT_KINDS)
        if unknown:
            raise ValueError(f"event_kinds {unknown} unknown (known: {', '.join(sorted(EVENT_KINDS))})")
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s must be at least retry_base_s")
        if self.receiving_facility and not self.receiving_application:
            raise ValueError("receiving_facility needs receiving_application too")
        try:  # a mistake is found when the file is read, not at the first message
            address = parse_destination(self.destination)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA time zone (Europe/London, UTC)") from None
        if self.transform == "fhir" and address.scheme in ("mllp", "mllps"):
            raise ValueError('transform = "fhir" needs an http(s), folder or nats destination: MLLP carries HL7 v2')
        if self.http_token_file and address.scheme not in ("http", "https"):
            raise ValueError("http_token_file is set but the destination is not http(s)://")
        if self.tls_ca_file and address.scheme not in ("mllps", "https"):
            raise ValueError("tls_ca_file is set but the destination is neither mllps:// nor https://")


@final
class Address(msgspec.Struct, frozen=True):
    """A destination, parsed: `scheme` is mllp, mllps, folder, nats, http or https.

    `host`/`port` for MLLP; `path` is the folder, the subject, or the whole URL.
    """

    scheme: Literal["mllp", "mllps", "folder", "nats", "http", "https"]
    host: str = ""
    port: int = 0
    path: str = ""


_SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")  # a subject to publish to: no wildcards
_HTTP = re.compile(r"^(https?)://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?(/[^\s?#]*)?$")
_MLLP = re.compile(r"^(mllps?)://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})/?$")


def parse_destination(value: str) -> Address:
    """`mllp://HOST:PORT`, `mllps://HOST:PORT`, `folder:PATH`, `nats:SUBJECT` or `http(s)://HOST[:PORT]/PATH`.

    Raises:
        ConfigError: any other form, a port out of range, a subject with wildcards.
    """
    if value.startswith("folder:") and len(value) > len("folder:"):
        return Address("folder", path=value[len("folder:") :])
    if value.startswith("nats:"):
        subject = value[len("nats:") :]
        if _SUBJECT.match(subject) is None:
            raise ConfigError(f"destination {value!r}: nats:SUBJECT needs a subject without wildcards (ehr.results)")
        return Address("nats", path=subject)
    web = _HTTP.match(value)
    if web is not None:
        if web.group(3) and not 0 < int(web.group(3)[1:]) <= 65535:
            raise ConfigError(f"destination {value!r}: the port must be 1 to 65535")
        return Address("https" if web.group(1) == "https" else "http", path=value.rstrip("/"))
    found = _MLLP.match(value)
    if found is None:
        raise ConfigError(
            f"destination {value!r}: expected mllp://HOST:PORT, mllps://HOST:PORT, folder:PATH, nats:SUBJECT"
            " or http(s)://HOST[:PORT]/PATH (no query or credentials in the URL)"
        )
    port = int(found.group(3))
    if not 0 < port <= 65535:
        raise ConfigError(f"destination {value!r}: the port must be 1 to 65535")
    scheme: Literal["mllp", "mllps"] = "mllps" if found.group(1) == "mllps" else "mllp"
    return Address(scheme, host=found.group(2).strip("[]"), port=port)
