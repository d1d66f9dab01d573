"""ListJobs pages across two eval providers of one service (each with its own job store)."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.eval.core import EvalCore
from services.eval.router import EvalRouter
from tests.integration.test_eval_jobs import SPEC, ScriptedDownstream, final, open_provider


async def test_list_jobs_pages_over_every_provider(tmp_path):
    a = await open_provider(tmp_path / "a", ScriptedDownstream())
    b = await open_provider(tmp_path / "b", ScriptedDownstream())
    try:
        created = {"a": [], "b": []}
        for name, provider, count in (("a", a, 3), ("b", b, 2)):
            for _ in range(count):
                job = await provider.run_eval(SPEC)
                created[name].append(job.job_id)
                await final(provider, job.job_id)
        core = EvalCore(EvalRouter({"a": a, "b": b}, cache=None))  # type: ignore[arg-type]
        seen, token, pages = [], "", 0
        while True:
            jobs, token = await core.list_jobs("bench", 2, token)
            seen += [j.job_id for j in jobs]
            pages += 1
            if not token:
                break
        assert seen == created["a"][::-1] + created["b"][::-1] and pages == 3  # newest first per provider
        assert [j.job_id for j in (await core.list_jobs("other-bench", 10, ""))[0]] == []
        with pytest.raises(InvalidArgument):
            await core.list_jobs("", 10, "garbage")
        assert (await core.job_status(created["b"][0], "")).job_id == created["b"][0]  # found in either store
    finally:
        await a.shutdown()
        await b.shutdown()
