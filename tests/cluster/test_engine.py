"""The engine's end-to-end tests, run again with the state on a 3-master Redis Cluster.

The bodies are those of `tests.e2e`; only the ``settings`` fixture differs (see
``conftest.py``): the worker, the CLI and the checks use cluster clients, and every
multi-key write must stay within one slot (a plain client, or a write across slots,
fails with MOVED or CROSSSLOT).
"""

from __future__ import annotations

import pytest

from tests.e2e.test_crash import (  # noqa: F401
    test_sigterm_mid_stream_then_restart_leaves_every_record_exact,
)
from tests.e2e.test_hostile import (  # noqa: F401
    test_hostile_messages_are_dead_lettered_and_records_stay_exact,
)
from tests.e2e.test_pipeline import (  # noqa: F401
    test_every_record_equals_totals_from_the_published_events,
)
from tests.e2e.test_redis_loss import (  # noqa: F401
    test_lost_writes_and_a_wiped_redis_are_rebuilt_from_kafka,
)
from tests.e2e.test_value_engine import (  # noqa: F401
    populated,
    test_fit_lookup_rank_and_rollups,
)

pytestmark = pytest.mark.integration
