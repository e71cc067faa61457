"""Reference records: departments, closures, linacs, protocols, patients."""

from __future__ import annotations

from scheduler import records
from scheduler.models import Role
from web.api import schemas as s
from web.api.registry import Audit, routes
from web.db import get_session

ADMIN, SCHEDULER, VIEWER = Role.ADMIN.value, Role.SCHEDULER.value, Role.VIEWER.value


def _set(body: s.Input) -> dict:
    """Only the fields a PATCH body sent: absent means unchanged, null means cleared."""
    return body.model_dump(exclude_unset=True)


# --- departments ----------------------------------------------------------------------------


@routes.operation(
    "GET", "/departments", summary="List departments", tag="Departments", role=VIEWER,
    response=s.DepartmentOut, many=True,
)  # fmt: skip
def list_departments():
    return records.list_departments(get_session())


@routes.operation(
    "POST", "/departments", summary="Create a department", tag="Departments", role=ADMIN,
    body=s.DepartmentIn, response=s.DepartmentOut, status=201,
    audit=Audit("create", "department"),
)  # fmt: skip
def create_department(body: s.DepartmentIn):
    return records.create_department(get_session(), body.model_dump(exclude_none=True))


@routes.operation(
    "GET", "/departments/{department_id}", summary="Get a department", tag="Departments",
    role=VIEWER, response=s.DepartmentOut,
)  # fmt: skip
def get_department(department_id: int):
    return records.get_department(get_session(), department_id)


@routes.operation(
    "PATCH", "/departments/{department_id}", summary="Update a department (e.g. opening hours)",
    tag="Departments", role=ADMIN, body=s.DepartmentPatch, response=s.DepartmentOut,
    audit=Audit("update", "department"),
)  # fmt: skip
def update_department(department_id: int, body: s.DepartmentPatch):
    """A changed reminder cadence re-plans the reminders still ahead of its patients."""
    return records.update_department(get_session(), department_id, _set(body))


@routes.operation(
    "GET", "/departments/{department_id}/closures", summary="List local closure days",
    tag="Departments", role=VIEWER, query=s.ClosureQuery, response=s.ClosureOut, many=True,
)  # fmt: skip
def list_closures(department_id: int, query: s.ClosureQuery):
    return records.list_closures(get_session(), department_id, start=query.start, end=query.end)


@routes.operation(
    "POST", "/departments/{department_id}/closures", summary="Add a local closure day",
    tag="Departments", role=ADMIN, body=s.ClosureIn, response=s.ClosureOut, status=201,
    audit=Audit("create", "closure"),
)  # fmt: skip
def add_closure(department_id: int, body: s.ClosureIn):
    """Booked fractions on that day are not moved automatically; list them with /fractions."""
    return records.add_closure(get_session(), department_id, day=body.day, reason=body.reason)


@routes.operation(
    "DELETE", "/closures/{closure_id}", summary="Remove a closure day", tag="Departments",
    role=ADMIN, status=204,
    audit=Audit("delete", "closure"),
)  # fmt: skip
def remove_closure(closure_id: int):
    records.remove_closure(get_session(), closure_id)


@routes.operation(
    "GET", "/departments/{department_id}/physicist-roster",
    summary="Get the department's physicist roster", tag="Departments", role=VIEWER,
    response=s.PhysicistRosterOut,
)  # fmt: skip
def get_physicist_roster(department_id: int):
    """When physicists are present to supervise SBRT sessions (first fractions, or every SBRT
    fraction when `every_fraction` is set). `enabled: false`: no roster, so supervision does
    not limit booking."""
    return records.get_physicist_roster(get_session(), department_id)


@routes.operation(
    "PUT", "/departments/{department_id}/physicist-roster",
    summary="Replace the department's physicist roster", tag="Departments", role=SCHEDULER,
    body=s.PhysicistRosterIn, response=s.PhysicistRosterOut,
    audit=Audit("update", "physicist_roster", id_from="department_id"),
)  # fmt: skip
def set_physicist_roster(department_id: int, body: s.PhysicistRosterIn):
    """Proposals, moves, rebookings and downtime re-plans place supervised fractions only
    where a rostered physicist is free. Existing bookings are not moved: the answer's
    `uncovered` lists those the new roster leaves without a physicist. Blocks of one weekday
    (or exceptions of one date) that overlap are refused. `{"enabled": false}` removes the
    roster."""
    return records.set_physicist_roster(
        get_session(), department_id, body.model_dump(mode="json", exclude_unset=True)
    )


# --- linacs ---------------------------------------------------------------------------------


@routes.operation(
    "GET", "/linacs", summary="List linacs", tag="Linacs", role=VIEWER, query=s.LinacQuery,
    response=s.LinacOut, many=True,
)  # fmt: skip
def list_linacs(query: s.LinacQuery):
    return records.list_linacs(get_session(), department_id=query.department_id)


@routes.operation(
    "POST", "/linacs", summary="Add a linac", tag="Linacs", role=ADMIN, body=s.LinacIn,
    response=s.LinacOut, status=201,
    audit=Audit("create", "linac"),
)  # fmt: skip
def create_linac(body: s.LinacIn):
    return records.create_linac(get_session(), body.model_dump())


@routes.operation(
    "GET", "/linacs/{linac_id}", summary="Get a linac", tag="Linacs", role=VIEWER,
    response=s.LinacOut,
)  # fmt: skip
def get_linac(linac_id: int):
    return records.get_linac(get_session(), linac_id)


@routes.operation(
    "PATCH", "/linacs/{linac_id}", summary="Update a linac", tag="Linacs", role=ADMIN,
    body=s.LinacPatch, response=s.LinacOut,
    audit=Audit("update", "linac"),
)  # fmt: skip
def update_linac(linac_id: int, body: s.LinacPatch):
    """Deactivating a linac revokes its calendar feeds; reactivating it does not restore them."""
    return records.update_linac(get_session(), linac_id, _set(body))


# --- protocols ------------------------------------------------------------------------------


@routes.operation(
    "GET", "/protocols", summary="List protocols", tag="Protocols", role=VIEWER,
    query=s.ProtocolQuery, response=s.ProtocolOut, many=True,
)  # fmt: skip
def list_protocols(query: s.ProtocolQuery):
    return records.list_protocols(get_session(), include_inactive=query.include_inactive)


@routes.operation(
    "POST", "/protocols", summary="Create a protocol", tag="Protocols", role=ADMIN,
    body=s.ProtocolIn, response=s.ProtocolOut, status=201,
    audit=Audit("create", "protocol"),
)  # fmt: skip
def create_protocol(body: s.ProtocolIn):
    return records.create_protocol(get_session(), body.model_dump())


@routes.operation(
    "GET", "/protocols/{protocol_id}", summary="Get a protocol", tag="Protocols", role=VIEWER,
    response=s.ProtocolOut,
)  # fmt: skip
def get_protocol(protocol_id: int):
    return records.get_protocol(get_session(), protocol_id)


@routes.operation(
    "PATCH", "/protocols/{protocol_id}", summary="Update a protocol", tag="Protocols",
    role=ADMIN, body=s.ProtocolPatch, response=s.ProtocolOut,
    audit=Audit("update", "protocol"),
)  # fmt: skip
def update_protocol(protocol_id: int, body: s.ProtocolPatch):
    """Changes apply to future bookings; booked courses keep their placements. A changed
    reminder cadence re-plans the reminders still ahead of the courses under it."""
    return records.update_protocol(get_session(), protocol_id, _set(body))


# --- patients -------------------------------------------------------------------------------


@routes.operation(
    "GET", "/patients", summary="List patients", tag="Patients", role=VIEWER,
    query=s.PatientQuery, response=s.PatientOut, many=True,
    audit=Audit("view", "patient"),
)  # fmt: skip
def list_patients(query: s.PatientQuery):
    return records.list_patients(
        get_session(), department_id=query.department_id, limit=query.limit, offset=query.offset
    )


@routes.operation(
    "POST", "/patients/search", summary="Search patients by MRN or name", tag="Patients",
    role=VIEWER, body=s.PatientSearch, response=s.PatientOut, many=True,
    audit=Audit("search", "patient"),
)  # fmt: skip
def search_patients(body: s.PatientSearch):
    """A POST so that names and MRNs never appear in URLs (and so in access logs)."""
    return records.list_patients(
        get_session(),
        search=body.query,
        department_id=body.department_id,
        limit=body.limit,
        offset=body.offset,
    )


@routes.operation(
    "POST", "/patients", summary="Register a patient", tag="Patients", role=SCHEDULER,
    body=s.PatientIn, response=s.PatientOut, status=201,
    audit=Audit("create", "patient"),
)  # fmt: skip
def create_patient(body: s.PatientIn):
    return records.create_patient(get_session(), body.model_dump())


@routes.operation(
    "GET", "/patients/{patient_id}", summary="Get a patient", tag="Patients", role=VIEWER,
    response=s.PatientOut,
    audit=Audit("view", "patient"),
)  # fmt: skip
def get_patient(patient_id: int):
    return records.get_patient(get_session(), patient_id)


@routes.operation(
    "PATCH", "/patients/{patient_id}", summary="Update a patient", tag="Patients",
    role=SCHEDULER, body=s.PatientPatch, response=s.PatientOut,
    audit=Audit("update", "patient"),
)  # fmt: skip
def update_patient(patient_id: int, body: s.PatientPatch):
    """Giving SMS consent records its time; it needs a phone number. Consent given again
    plans the reminders of the sessions still ahead."""
    return records.update_patient(get_session(), patient_id, _set(body))
