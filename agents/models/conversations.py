"""A project's conversation: its messages, in the order they were committed."""

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from agents.models.executions import AgentExecution
from core.models import JSONField
from documents.models import project_live_trigger
from tenancy.models import TenantForeignKey, TenantOwnedModel


class MessageRole(models.TextChoices):
    USER = "user", "User"
    AGENT = "agent", "Agent"
    SYSTEM = "system", "System"
    TOOL = "tool", "Tool"


class ConversationMessage(TenantOwnedModel):
    """One message of a project's conversation, optionally tied to an execution.

    Order is `position`, allocated 1, 2, 3... per project under a lock (like document
    versions), so it follows commit order with no ties or gaps; created_at can tie
    and, between concurrent writers, disagree with the order the messages landed in.
    """

    Role = MessageRole

    project = TenantForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="messages",
    )
    execution = TenantForeignKey(
        AgentExecution,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    position = models.IntegerField(validators=[MinValueValidator(1)])
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField()
    metadata = JSONField(default=dict, blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "conversation_messages"
        constraints = [
            # The conversation's order; tenant-first, so also the (tenant_id, project_id) FK.
            models.UniqueConstraint(
                fields=["tenant", "project", "position"],
                name="conversation_messages_position_uniq",
            ),
            models.CheckConstraint(
                condition=Q(role__in=MessageRole.values), name="conversation_messages_role_valid"
            ),
            models.CheckConstraint(
                condition=Q(position__gte=1), name="conversation_messages_position_gte_1"
            ),
        ]
        indexes = [
            # A project's messages by time.
            models.Index(fields=["project", "created_at"], name="conv_messages_proj_created_idx"),
            # One execution's messages in order; both execution FKs' ON DELETE SET NULL.
            models.Index(
                fields=["execution", "tenant", "position"], name="conv_messages_execution_idx"
            ),
        ]
        triggers = [*TenantOwnedModel.Meta.triggers, project_live_trigger()]

    def __str__(self) -> str:
        return f"{self.role} #{self.position}"
