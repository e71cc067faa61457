"""The access policy itself: who sees which department, and how a session is narrowed."""

from __future__ import annotations

import gc

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from bootstrap import make_session_factory
from scheduler import access
from scheduler.models import Course, Department, Fraction, Linac, Patient, Role, User
from tests import factories


def _two_departments(session: Session) -> tuple[Department, Department]:
    one = factories.department(session, name="One")
    two = factories.department(session, name="Two")
    liver = factories.protocol(session)
    for dept in (one, two):
        factories.linacs(session, dept)
        factories.course(session, factories.patient(session, dept), liver)
    session.commit()
    return one, two


def test_admins_see_every_department_others_only_their_own(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        one, two = _two_departments(session)
        admin = factories.user(session, departments=[], role=Role.ADMIN)
        member = factories.user(session, departments=[two], role=Role.VIEWER)
        nobody = factories.user(session, departments=[], role=Role.SCHEDULER)
        assert access.visible_department_ids(session, admin) is None
        assert access.visible_department_ids(session, member) == {two.id}
        assert access.visible_department_ids(session, nobody) == frozenset()
        session.commit()


def test_a_restricted_session_sees_only_its_departments_everywhere(
    session_factory: sessionmaker[Session], engine: sa.Engine
) -> None:
    with session_factory() as setup:
        one, two = _two_departments(setup)
        member_id = factories.user(setup, departments=[two]).id
        one_id, two_id = one.id, two.id
        one_patient = setup.scalar(sa.select(Patient.id).where(Patient.department_id == one_id))
        setup.commit()
    narrowed = make_session_factory(engine)
    access.install(narrowed)
    with narrowed() as session:
        user = session.get(User, member_id)
        assert user is not None
        access.restrict_session(session, user)
        assert [d.id for d in session.scalars(sa.select(Department))] == [two_id]
        assert {p.department_id for p in session.scalars(sa.select(Patient))} == {two_id}
        assert session.get(Patient, one_patient) is None
        assert session.get(Department, one_id) is None
        # Counting and joining are narrowed as well as loading whole rows.
        assert session.scalar(sa.select(sa.func.count(Linac.id))) == 4
        joined = sa.select(Course.id).join(Patient).where(Patient.department_id == one_id)
        assert session.scalars(joined).all() == []
        assert session.scalars(sa.select(Fraction)).all() == []
        # Relationships loaded from a visible row stay inside the scope.
        visible = session.get(Department, two_id)
        assert visible is not None and {linac.department_id for linac in visible.linacs} == {two_id}
    # The same factory's sessions for the service (tasks, the CLI) are not narrowed.
    with narrowed() as service:
        assert service.scalar(sa.select(sa.func.count(Patient.id))) == 2


def test_every_new_session_factory_is_narrowed(
    session_factory: sessionmaker[Session], engine: sa.Engine
) -> None:
    """Apps come and go (tests, CLI commands); a new factory that happens to reuse the
    memory of a discarded one must still be narrowed."""
    with session_factory() as setup:
        _two_departments(setup)
    for _ in range(30):
        factory = make_session_factory(engine)
        access.install(factory)
        with factory() as session:
            session.info[access.SCOPE_KEY] = frozenset()
            assert session.scalars(sa.select(Department)).all() == []
        del factory, session
        gc.collect()
