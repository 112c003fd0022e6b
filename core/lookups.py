"""`<text field>__trigram_icontains`: case-insensitive contains, as ILIKE for pg_trgm.

Django writes `icontains` as `UPPER(col::text) LIKE UPPER('%term%')`, which a trigram
index on the column cannot serve (it would need an index on the UPPER() expression, and
under row-level security upper() would have to be LEAKPROOF too). `col ILIKE '%term%'`
is served by `GinIndex(fields=[col], opclasses=["gin_trgm_ops"])`; under row-level
security only because `texticlike` is marked LEAKPROOF (core.ops.leakproof). The term's own
`%`, `_` and `\\` are escaped as for icontains, so it matches literally.

The admin's big-table searches use it: `search_fields = ("agent_type__trigram_icontains",)`.
"""

from django.db.models import CharField, TextField
from django.db.models.lookups import IContains


class TrigramIContains(IContains):
    lookup_name = "trigram_icontains"

    def as_sql(self, compiler, connection):
        lhs_sql, lhs_params = self.process_lhs(compiler, connection)
        rhs_sql, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs_sql} ILIKE {rhs_sql}", (*lhs_params, *rhs_params)


CharField.register_lookup(TrigramIContains)
TextField.register_lookup(TrigramIContains)
