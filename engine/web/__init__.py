"""The node's HTTP face: probes and Prometheus metrics, FHIR R4 REST reads (bitemporal), HL7 v2 and FHIR in.

`resources` and `fhir_query` are pure (a record as FHIR resources, a search's
parameters); `gate` decides who may (registered clients' bearer tokens and
scopes, audited); `app` puts the routes together; `server` serves them with
hypercorn on the node's own event loop; `console_api` is the web console's
door (browser sessions, the same requests as the CLI) and `console/` its page.
"""

from engine.web.app import web_app
from engine.web.console_api import CONSOLE_OPERATIONS, ConsoleApi, Handle, LoginLimiter
from engine.web.fhir_api import FhirReads, RecordReader, RecordUnavailableError
from engine.web.gate import AuthorizeClient, Gate
from engine.web.ingest_api import HL7_MEDIA, Acknowledge, IngestApi, IngestOne
from engine.web.probes import Probes, Readiness, Report, metric_families
from engine.web.resources import READABLE_TYPES, key_of_patient_id, patient_id, resources_of
from engine.web.server import HttpServer

__all__ = [
    "CONSOLE_OPERATIONS",
    "HL7_MEDIA",
    "READABLE_TYPES",
    "Acknowledge",
    "AuthorizeClient",
    "ConsoleApi",
    "FhirReads",
    "Gate",
    "Handle",
    "HttpServer",
    "IngestApi",
    "IngestOne",
    "LoginLimiter",
    "Probes",
    "Readiness",
    "RecordReader",
    "RecordUnavailableError",
    "Report",
    "key_of_patient_id",
    "metric_families",
    "patient_id",
    "resources_of",
    "web_app",
]
