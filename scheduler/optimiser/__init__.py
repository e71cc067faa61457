"""Placing several courses together: a constraint model and its use from the database."""

from scheduler.optimiser.model import CourseToPlace, Problem, Solution, solve
from scheduler.optimiser.planning import CourseRequest, plan_courses

__all__ = ["CourseRequest", "CourseToPlace", "Problem", "Solution", "plan_courses", "solve"]
