"""Writes of agent executions, their sources and errors, conversation messages,
evaluations, decisions and change proposals, one module per
concern; callers import from here.

- executions: new executions, created once per idempotency key, and retries;
- transitions: start, finish, fail (with its error record) and cancel, each one
  conditional UPDATE; bounded_traceback;
- sources: the chunks an execution retrieved (provenance);
- records: conversation messages, evaluations and decisions;
- history: agent_executions' monthly partitions, created ahead and dropped past
  retention;
- _common: the full_clean() with range checks that all of them validate with.
"""

from agents.services.executions import RETRYABLE_STATUSES, execution_create, execution_retry
from agents.services.history import (
    EXECUTIONS_TABLE,
    execution_history_retain,
    execution_partitions_ensure,
)
from agents.services.proposals import (
    change_proposal_apply,
    change_proposal_approve,
    change_proposal_propose,
    change_proposal_reject,
)
from agents.services.records import (
    SCORE_MAX,
    decision_options_errors,
    decision_record,
    evaluation_record,
    message_add,
)
from agents.services.sources import execution_record_sources
from agents.services.transitions import (
    TRUNCATED_MARKER,
    USAGE_MINIMUMS,
    bounded_traceback,
    execution_cancel,
    execution_fail,
    execution_finish,
    execution_start,
)

__all__ = [
    "EXECUTIONS_TABLE",
    "RETRYABLE_STATUSES",
    "SCORE_MAX",
    "TRUNCATED_MARKER",
    "USAGE_MINIMUMS",
    "bounded_traceback",
    "change_proposal_apply",
    "change_proposal_approve",
    "change_proposal_propose",
    "change_proposal_reject",
    "decision_options_errors",
    "decision_record",
    "evaluation_record",
    "execution_cancel",
    "execution_create",
    "execution_fail",
    "execution_finish",
    "execution_history_retain",
    "execution_partitions_ensure",
    "execution_record_sources",
    "execution_retry",
    "execution_start",
    "message_add",
]
