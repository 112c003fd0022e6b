"""Users, tenants and memberships."""

import re
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.postgres.indexes import GinIndex
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.db.models.lookups import Exact

from core.models import BaseModel, JSONField, TimestampedModel, related_label

_UNHASHABLE = re.compile("[\ud800-\udfff]")


class UserManager(BaseUserManager["User"]):
    def _create(self, email: str, password: str | None, **fields) -> "User":
        if not email:
            raise ValidationError({"email": "An email address is required."})
        if password is not None and (found := _UNHASHABLE.search(password)):
            # The hasher encodes the password as UTF-8, which has no unpaired surrogate.
            raise ValidationError(
                {
                    "password": f"The password contains an unpaired surrogate "
                    f"(\\u{ord(found.group()):04x}), which has no UTF-8 encoding."
                }
            )
        user = self.model(email=self.normalize_email(email).lower(), **fields)
        user.set_password(password)
        user.full_clean(exclude=["password"])
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **fields) -> "User":
        fields.setdefault("is_staff", False)
        fields.setdefault("is_superuser", False)
        return self._create(email, password, **fields)

    def create_superuser(self, email: str, password: str | None = None, **fields) -> "User":
        fields.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **fields)

    def with_email(self, email: str) -> models.QuerySet:
        """Users whose email equals `email` case-insensitively, through users_email_ci_uniq.

        (`email__iexact` compiles to UPPER(), which that lower(email) index cannot serve.)
        """
        return self.alias(email_lower=Lower("email")).filter(email_lower=email.strip().lower())

    def get_by_natural_key(self, email: str | None) -> "User":
        # Email is the login and unique case-insensitively; no email matches no user.
        return self.with_email(email or "").get()


class User(AbstractBaseUser, TimestampedModel):
    """A person who logs in with their email; the AUTH_USER_MODEL."""

    email = models.EmailField(max_length=254)
    name = models.CharField(max_length=200, blank=True)
    profile_data = JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    is_superuser = models.BooleanField(default=False)
    last_login = models.DateTimeField(db_column="last_login_at", null=True, blank=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["name"]

    class Meta(TimestampedModel.Meta):
        db_table = "users"
        constraints = [
            models.UniqueConstraint(Lower("email"), name="users_email_ci_uniq"),
        ]
        indexes = [
            # profile_data @> '{...}' lookups.
            GinIndex(fields=["profile_data"], name="users_profile_data_gin"),
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = self.__class__.objects.normalize_email(self.email).lower()

    # Tenant roles (Membership) decide what a staff member may do; Django's
    # per-model permission tables are not used.
    def has_perm(self, perm: str, obj=None) -> bool:
        return self.is_active and self.is_superuser

    def has_module_perms(self, app_label: str) -> bool:
        return self.is_active and (self.is_superuser or self.is_staff)


class Tenant(TimestampedModel):
    """A customer organisation; every tenant-owned row points at one."""

    name = models.CharField(max_length=200)
    # Indexed by tenants_slug_uniq; no second, unnamed index from db_index.
    slug = models.SlugField(max_length=100, db_index=False)
    settings = JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta(TimestampedModel.Meta):
        db_table = "tenants"
        constraints = [models.UniqueConstraint(fields=["slug"], name="tenants_slug_uniq")]

    def __str__(self) -> str:
        return self.name


# The set and get types of a field, as django-stubs names them for ForeignKey.
_ST = TypeVar("_ST", contravariant=True)
_GT = TypeVar("_GT", covariant=True)


# Generic like django-stubs' ForeignKey, so its plugin fills in the related model (and
# Optional of it with null=True) as it does for ForeignKey. No monkeypatch is needed:
# Django's ForeignKey has had a __class_getitem__ (returning the class) since 4.1, so the
# subscripted base is the plain ForeignKey at runtime.
class TenantForeignKey(models.ForeignKey[_ST, _GT]):
    """A key from one tenant table to another: no single-column constraint, no own index.

    The composite key `(tenant_id, x_id) -> x (tenant_id, id)` that the migrations add
    (core.db.operations.AddTenantForeignKey) enforces it and pins the tenant, and the
    model's tenant-first or `(x, tenant)` index serves it (see TenantOwnedModel). Like
    Sentry's FlexibleForeignKey, the defaults are set here once.
    """

    def __init__(self, to: Any, on_delete: Any, **kwargs: Any) -> None:
        kwargs.setdefault("db_constraint", False)
        kwargs.setdefault("db_index", False)
        super().__init__(to, on_delete, **kwargs)

    def deconstruct(self) -> tuple[str, str, Sequence[Any], dict[str, Any]]:
        # Reported as the plain ForeignKey with both keywords, which is what the
        # migrations already say: the field class is a spelling, not a schema change, so
        # makemigrations sees nothing to alter and migrations never import this app.
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.ForeignKey", args, kwargs

    def get_extra_restriction(self, alias: str | None, related_alias: str | None) -> Any:
        """`AND x.tenant_id = this.tenant_id` in every join along this key, both ways.

        What the composite key says already, told to the query: on Citus a join of two
        tenant tables is routed to one shard only where the tenant columns are equal,
        as a select_related of a row filtered on its tenant_id then is (any other join
        across shards is refused). Django asks with `alias` (the referenced table's)
        None where it trims the join away; there is nothing to join then.
        """
        if alias is None or related_alias is None:
            return None
        target = cast("type[models.Model]", self.related_model)._meta.get_field("tenant")
        source = self.model._meta.get_field("tenant")
        assert isinstance(target, models.Field) and isinstance(source, models.Field)
        return Exact(target.get_col(alias), source.get_col(related_alias))


# What services and selectors take as `tenant`: the row, or its id (a row's tenant_id),
# which tenancy.context.require_tenant turns into the id.
TenantRef = Tenant | uuid.UUID


class TenantOwnedModel(TimestampedModel):
    """A row that belongs to one tenant; row-level security keys on `tenant_id`.

    The tenant column is indexed by each concrete model's tenant-first index. Foreign
    keys to other tenant tables are TenantForeignKeys (`db_constraint=False`): the composite keys
    `(tenant_id, x_id) -> x (tenant_id, id)` of the migrations enforce them (and pin the
    tenant), and a single-column key would be the one thing stopping a Citus cluster
    from co-locating a tenant's rows (tests/core/test_distribution.py).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)

    class Meta(TimestampedModel.Meta):
        abstract = True

    # The tenant the row is stored under (as loaded, or as inserted), which save()'s
    # UPDATE filters on: a tenant_id changed on the instance is then still refused by
    # the database as a change of the row, not taken for a new row.
    _stored_tenant_id: uuid.UUID | None = None

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._stored_tenant_id = instance.__dict__.get("tenant_id")
        return instance

    def _get_unique_checks(self, exclude=None, include_meta_constraints=False):
        """Django's, without the primary key's: an id is a new UUIDv7 made here and the
        key is the database's to enforce, while that check (a read by id alone) asks
        every shard of a Citus cluster. The other unique keys all hold tenant_id."""
        # Django's, though django-stubs does not declare it.
        unique_checks, date_checks = super()._get_unique_checks(  # type: ignore[misc]
            exclude=exclude, include_meta_constraints=include_meta_constraints
        )
        primary_key = (self._meta.pk.name,)
        return [check for check in unique_checks if tuple(check[1]) != primary_key], date_checks

    def _do_insert(self, manager, using, fields, returning_fields, raw):
        # Django's, though django-stubs does not declare it.
        inserted = super()._do_insert(  # type: ignore[misc]
            manager, using, fields, returning_fields, raw
        )
        self._stored_tenant_id = self.tenant_id
        return inserted

    def _do_update(self, base_qs, using, pk_val, values, update_fields, forced_update):
        # save() of a stored row: UPDATE ... WHERE tenant_id = %s AND id = %s. On Citus an
        # UPDATE filtered on its tenant is routed to that tenant's shard, where one by id
        # alone would go to every shard of the table, locking each.
        tenant_id = self._stored_tenant_id or self.tenant_id
        return super()._do_update(
            base_qs.filter(tenant_id=tenant_id),
            using,
            pk_val,
            values,
            update_fields,
            forced_update,
        )


class MembershipRole(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    EDITOR = "editor", "Editor"
    VIEWER = "viewer", "Viewer"


# The roles that see every restricted project and document of their tenant and decide
# who else may (docs/security.md, "Restricted rows").
FULL_ACCESS_ROLES = (MembershipRole.OWNER, MembershipRole.ADMIN)


class Membership(TenantOwnedModel):
    """A user's role in a tenant."""

    Role = MembershipRole

    user = models.ForeignKey(
        User, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta(TenantOwnedModel.Meta):
        db_table = "memberships"
        constraints = [
            # Also the tenant-first index: members of a tenant.
            models.UniqueConstraint(fields=["tenant", "user"], name="memberships_tenant_user_uniq"),
            models.CheckConstraint(
                condition=models.Q(role__in=MembershipRole.values), name="memberships_role_valid"
            ),
        ]
        indexes = [
            # A user's tenants (login, tenant middleware).
            models.Index(fields=["user"], name="memberships_user_idx"),
        ]

    def __str__(self) -> str:
        return f"{related_label(self, 'user')} @ {related_label(self, 'tenant')} ({self.role})"


class AuditAction(models.TextChoices):
    INSERT = "insert", "Insert"
    UPDATE = "update", "Update"
    DELETE = "delete", "Delete"


class AuditEventBase(BaseModel):
    """What every audit event holds (core.db.audit writes them, from triggers only)."""

    Action = AuditAction

    # Position in its chain, from 1: the order the chain is verified in. NULL, with
    # prev_hash and hash, until audit_seal seals the event after its commit.
    seq = models.BigIntegerField(null=True, blank=True)
    table_name = models.CharField(max_length=63)
    row_id = models.UUIDField()
    action = models.CharField(max_length=6, choices=Action.choices)
    # Not a foreign key: the trail outlives the users it names (erasure, deletion).
    actor_user_id = models.UUIDField(null=True, blank=True)
    actor = models.CharField(max_length=200)
    request_id = models.CharField(max_length=100, blank=True, default="")
    changes = JSONField(default=dict)
    # The hex SHA-256 of `changes`' jsonb text, written with the event: what the chain's
    # hash covers, so `changes` can be redacted and the chain still verifies.
    changes_sha256 = models.CharField(max_length=64)
    # Set when the event's changes were replaced by {"redacted": true} (an erasure).
    redacted_at = models.DateTimeField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, null=True, blank=True)
    hash = models.CharField(max_length=64, null=True, blank=True)

    class Meta(BaseModel.Meta):
        abstract = True

    @property
    def sealed(self) -> bool:
        return self.hash is not None

    def __str__(self) -> str:
        return f"{self.action} {self.table_name} {self.row_id} by {self.actor}"


class AuditEvent(AuditEventBase):
    """One insert, update or delete of a tenant's row: append-only, hash-chained per tenant."""

    # No database key (db_constraint=False): a tenant's deletion is itself recorded, and
    # the trail must never cascade away with the rows it describes.
    tenant = models.ForeignKey(
        Tenant, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )

    class Meta(AuditEventBase.Meta):
        db_table = "audit_events"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(action__in=AuditAction.values), name="audit_events_action_valid"
            ),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="audit_events_seq_gte_1"),
        ]
        indexes = [
            # The chain's head (audit_seal, past the unsealed events' NULLs) and its order
            # (audit_verify).
            models.Index(fields=["tenant", "-seq"], name="audit_events_tenant_seq_idx"),
            # The events audit_seal has still to seal, in the order it seals them: small,
            # since a seal takes its rows out of it.
            models.Index(
                fields=["tenant", "created_at", "id"],
                condition=models.Q(hash__isnull=True),
                name="audit_events_unsealed_idx",
            ),
            # One row's history (the admin's link from a change page).
            models.Index(
                fields=["tenant", "table_name", "row_id"], name="audit_events_tenant_row_idx"
            ),
        ]


class GlobalAuditEvent(AuditEventBase):
    """One write of a row outside tenants (users, tenants, shared templates): one chain."""

    class Meta(AuditEventBase.Meta):
        db_table = "audit_events_global"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(action__in=AuditAction.values),
                name="audit_events_global_action_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(seq__gte=1), name="audit_events_global_seq_gte_1"
            ),
        ]
        indexes = [
            models.Index(fields=["-seq"], name="audit_events_global_seq_idx"),
            models.Index(
                fields=["created_at", "id"],
                condition=models.Q(hash__isnull=True),
                name="audit_global_unsealed_idx",
            ),
            models.Index(fields=["table_name", "row_id"], name="audit_events_global_row_idx"),
        ]


class AuditChainAnchor(TenantOwnedModel):
    """Where a tenant's audit chain starts once retention has removed its oldest events:
    the last removed event's seq and hash (tenancy.audit, retention.services)."""

    seq = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    # When retention last moved the anchor.
    cut_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        db_table = "audit_chain_anchors"
        constraints = [
            # One anchor per chain; also the tenant-first index the append-only
            # trigger's and audit_verify's reads take.
            models.UniqueConstraint(fields=["tenant"], name="audit_chain_anchors_tenant_uniq"),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="audit_chain_anchors_seq"),
        ]

    def __str__(self) -> str:
        return f"Audit chain of tenant {self.tenant_id} from seq {self.seq + 1}"
