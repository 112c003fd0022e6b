"""Runs, their records, proposals, decisions, messages and evaluations of a restricted
project are hidden with it (docs/security.md, "Restricted rows"; documents.0014).

Each table carries restricted_to, derived by triggers from its parents (AddRowAccess):
the tables with a project_id from their project; execution_errors,
execution_idempotency_keys and execution_sources, which hang off a run, from their run;
a source also from the document of the chunk it cites (`document_id`, a snapshot that
may outlive the document, so a missing one adds nothing).
"""

import core.db.operations

PROJECT = {'project_id': 'projects'}
RUN = {'execution_id': 'agent_executions'}

# Each table of this app below a restricted row, and where its restriction comes from;
# the runs first, since the records of a run follow it.
ROW_ACCESS = [
    core.db.operations.AddRowAccess('agent_executions', parents=PROJECT),
    core.db.operations.AddRowAccess('change_proposals', parents=PROJECT),
    core.db.operations.AddRowAccess('decisions', parents=PROJECT),
    core.db.operations.AddRowAccess('conversation_messages', parents=PROJECT),
    core.db.operations.AddRowAccess('evaluation_runs', parents=PROJECT),
    core.db.operations.AddRowAccess('execution_errors', parents=RUN),
    core.db.operations.AddRowAccess('execution_idempotency_keys', parents=RUN),
    core.db.operations.AddRowAccess(
        'execution_sources', parents=RUN, loose={'document_id': 'documents'}
    ),
]


class Migration(core.db.operations.Migration):
    dependencies = [
        ('agents', '0016_audit_trail'),
        ('documents', '0014_restricted_rows_and_access_grants'),
    ]

    operations = ROW_ACCESS
