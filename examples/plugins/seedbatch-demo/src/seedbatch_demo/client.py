"""The Demo Images client: :class:`runner.providers.base.Provider` over HTTP.

It reuses seedbatch's shared plumbing (:class:`runner.providers.http.HttpProvider`): one
pooled ``httpx.AsyncClient``, request counters, transport failures turned into typed errors
(a lost answer to the call that creates an image job is an UnknownOutcome), and streamed
downloads of the public output URLs. What is Demo Images' own is in :mod:`seedbatch_demo.wire`.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx

from runner.errors import JobRejected
from runner.jobs import Job
from runner.providers.base import SubmitResult, TaskState, TaskStatus
from runner.providers.http import HttpProvider
from seedbatch_demo.wire import PROVIDER, create_body, error_for, parse_created, parse_image

log = logging.getLogger(__name__)


class DemoProvider(HttpProvider):
    """Demo Images over HTTP: ``POST /images``, ``GET /images/{id}``,
    ``POST /images/{id}/cancel``; outputs are public URLs (no credential sent with them)."""

    name = PROVIDER
    can_cancel = True

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
        concurrency: int = 8,
    ) -> None:
        super().__init__(base_url=base_url, secrets=(api_key,), transport=transport,
                         timeout=timeout, concurrency=concurrency)
        self._api_key = api_key

    def _headers(self) -> dict[str, str]:
        # per call, never on the client: output downloads must not carry the key
        return {"Authorization": f"Bearer {self._api_key}"}

    def _image_url(self, task_id: str, suffix: str = "") -> str:
        return f"{self.base_url}/images/{quote(str(task_id), safe='')}{suffix}"

    async def _call(self, kind: str, method: str, url: str, *, op: str, subject: str,
                    creates: bool = False,
                    **kwargs: Any) -> tuple[httpx.Response, dict[str, Any] | None]:
        """One API call: a 2xx answer and its JSON object (None when the body is not one),
        or the typed error of any other answer."""
        response = await self.send(kind, method, url, headers=self._headers(), creates=creates,
                                   what=f"{method} {url.removeprefix(self.base_url)}", **kwargs)
        if response.status_code >= 400:
            raise error_for(response, op=op, subject=subject, secrets=self._secrets)
        return response, self.json_body(response, op)

    # -- the Provider interface -----------------------------------------------------------

    async def submit(self, job: Job) -> SubmitResult:
        spec = self.spec_for(job)
        if job.images:
            raise JobRejected(f"{spec.id} is text-to-image only and takes no reference images "
                              f"({len(job.images)} given)", provider=PROVIDER)
        _, doc = await self._call("submit", "POST", f"{self.base_url}/images",
                                  json=create_body(spec, job), op="submit",
                                  subject=spec.endpoint, creates=True)
        return parse_created(doc)  # an unreadable 2xx answer: UnknownOutcome

    async def poll(self, task_id: str) -> TaskStatus:
        response, doc = await self._call("poll", "GET", self._image_url(task_id), op="poll",
                                         subject=str(task_id))
        if doc is None:
            raise self.not_json_error(response, "poll")  # a ServerError: polls are repeatable
        return parse_image(doc, str(task_id))

    async def cancel(self, task_id: str, state: TaskState) -> None:
        """Stop a queued or running image job (it is then not billed); nothing to do for
        one that has ended. A 409 (it ended meanwhile) is a JobRejected: the job stays
        attached to its image job and its outputs are still downloaded."""
        if state.terminal:
            return
        await self._call("cancel", "POST", self._image_url(task_id, "/cancel"), op="cancel",
                         subject=str(task_id))
        log.info("Demo Images image job %s canceled", task_id)
