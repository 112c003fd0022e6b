"""Writes of agent executions, their sources and errors, conversation messages,
evaluations, decisions and change proposals, one module per
concern; callers import from here.

- executions: new executions, created once per idempotency key, retries, and the
  corrections of a pending one;
- transitions: start, finish, fail (with its error record) and cancel, each one
  conditional UPDATE; bounded_traceback;
- sources: the chunks an execution retrieved (provenance);
- records: conversation messages, evaluations and decisions;
- proposals: change proposals, their review and applying them;
- usage: the tenants' quotas, and the refusal of new executions past them;
- lifecycle: move_status, the conditional UPDATE every status change makes;
- history: agent_executions' monthly partitions, created ahead and dropped past
  retention;
- _common: the full_clean() with the model's CHECKs, per field, that all of them use.
"""

from agents.services.executions import (
    execution_create,
    execution_retry,
    execution_update,
)
from agents.services.history import (
    PartitionsSummary,
    execution_history_retain,
    execution_partitions_ensure,
)
from agents.services.proposals import (
    change_proposal_apply,
    change_proposal_approve,
    change_proposal_propose,
    change_proposal_reject,
    change_proposal_update,
)
from agents.services.records import (
    decision_options_errors,
    decision_record,
    evaluation_record,
    message_add,
)
from agents.services.sources import execution_record_sources
from agents.services.transitions import (
    bounded_traceback,
    execution_cancel,
    execution_fail,
    execution_finish,
    execution_start,
)
from agents.services.usage import tenant_quota_set

__all__ = [
    "PartitionsSummary",
    "bounded_traceback",
    "change_proposal_apply",
    "change_proposal_approve",
    "change_proposal_propose",
    "change_proposal_reject",
    "change_proposal_update",
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
    "execution_update",
    "message_add",
    "tenant_quota_set",
]
