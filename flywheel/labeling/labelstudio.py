"""The LabelingTool port (flywheel.core.ports) on Label Studio's REST API, with httpx.

Images travel by upload: each pushed image is posted to the project's import endpoint without
making a task (`commit_to_project=false`), then the tasks are imported as JSON that points at
the uploaded files (`/data/upload/...`) and carries the pre-annotations, the image's sha256 and
its name. Uploads work against any Label Studio flywheel can reach over HTTP; its local-files
storage would need a disk both hosts mount (and LOCAL_FILES_SERVING_ENABLED on the server).
A pull fetches each image back from Label Studio, so it needs nothing of what was pushed to
still be on flywheel's disk.

Every httpx error, HTTP error status and unexpected answer becomes LabelingToolUnavailable,
naming the URL (never the token) and what to check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree

import httpx

from flywheel.core.errors import LabelingToolUnavailable
from flywheel.core.labeling import FROM_NAME, TO_NAME, Annotation, LabeledTask, NewTask, Region, labeling_config

SHA_KEY = "flywheel_sha256"  # in each pushed task's data: the image's identity
NAME_KEY = "flywheel_name"  # and its name as found
PAGE = 100
UPLOADS_PER_REQUEST = 20
HOOK_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED"]


class LabelStudio:
    def __init__(self, url: str, token: str, project: str, timeout: float = 30.0, client: httpx.Client | None = None):
        self.url = url.rstrip("/")
        self.project_ref = project
        self._client = client or httpx.Client(base_url=self.url, timeout=timeout)
        self._token = token
        self._auth: dict[str, str] | None = None
        self._project_id: int | None = None

    # --- the port
    def ensure_project(self, class_names: Sequence[str]) -> str:
        project = self._find_project()
        if project is None:
            if self.project_ref.isdigit():
                raise self._error(f"project {self.project_ref} does not exist (labelstudio.project)")
            body = {"title": self.project_ref, "label_config": labeling_config(class_names)}
            project = self._json("POST", "/api/projects", json=body)
        self._project_id = int(project["id"])
        return f"{project.get('title', '')} (project {self._project_id} at {self.url})"

    def project_key(self) -> str:
        return f"{self.url}/projects/{self._id()}"

    def class_names(self) -> list[str]:
        config = str(self._json("GET", f"/api/projects/{self._id()}").get("label_config", ""))
        try:
            root = ElementTree.fromstring(config)
        except ElementTree.ParseError as exc:
            raise self._error(f"the project's labeling config is not XML ({exc})") from None
        return [str(label.get("value")) for label in root.iter("Label") if label.get("value") is not None]

    def pushed_images(self) -> set[str]:
        return {str(t["data"][SHA_KEY]) for t in self._all_tasks() if t.get("data", {}).get(SHA_KEY)}

    def push(self, tasks: Sequence[NewTask]) -> list[int]:
        refs: list[str] = []
        for start in range(0, len(tasks), UPLOADS_PER_REQUEST):
            refs.extend(self._upload(tasks[start : start + UPLOADS_PER_REQUEST]))
        body = [_task_json(t, ref) for t, ref in zip(tasks, refs, strict=True)]
        answer = self._json("POST", f"/api/projects/{self._id()}/import", params={"return_task_ids": "true"}, json=body)
        return [int(i) for i in answer.get("task_ids", [])]

    def tasks(self) -> list[LabeledTask]:
        return [_labeled(t) for t in self._all_tasks()]

    def image(self, task: LabeledTask) -> bytes:
        return self._call("GET", task.image_ref).content

    def ensure_webhook(self, url: str) -> bool:
        project = self._id()
        hooks = self._json("GET", "/api/webhooks", params={"project": project})
        if any(h.get("url") == url and h.get("is_active", True) for h in hooks if isinstance(h, dict)):
            return False
        # no payload: the webhook only says "pull now"; what is pulled is read from the API
        body = {"project": project, "url": url, "send_payload": False, "is_active": True, "actions": HOOK_ACTIONS}
        response = self._send("POST", "/api/webhooks", self._headers(), json=body)
        if response.status_code == 400:  # its SSRF guard refuses private addresses unless told otherwise
            raise self._error(
                f"refused the webhook {url} (labelstudio.webhook_url): {response.text[:300]}; a Label Studio "
                "posting to a private address needs SSRF_PROTECTION_ENABLED=false or USE_DEFAULT_BANNED_SUBNETS=false"
            )
        self._checked(response)
        return True

    # --- HTTP
    def _id(self) -> int:
        if self._project_id is None:
            project = self._find_project()
            if project is None:
                raise self._error(
                    f"no project {self.project_ref!r} (labelstudio.project); `flywheel label push` makes one"
                )
            self._project_id = int(project["id"])
        return self._project_id

    def _find_project(self) -> dict[str, Any] | None:
        if self.project_ref.isdigit():
            status, project = self._maybe("GET", f"/api/projects/{self.project_ref}")
            return project if status == 200 else None
        page = 1
        while True:
            answer = self._json("GET", "/api/projects", params={"page": page, "page_size": PAGE})
            results = answer.get("results", []) if isinstance(answer, dict) else answer
            for project in results:
                if project.get("title") == self.project_ref:
                    return dict(project)
            if not isinstance(answer, dict) or not answer.get("next"):
                return None
            page += 1

    def _all_tasks(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {"project": self._id(), "page": page, "page_size": PAGE, "fields": "all"}
            status, answer = self._maybe("GET", "/api/tasks", params=params)
            if status == 404:  # past the last page
                return tasks
            batch = answer.get("tasks", []) if isinstance(answer, dict) else []
            tasks.extend(batch)
            if len(batch) < PAGE:
                return tasks
            page += 1

    def _upload(self, tasks: Sequence[NewTask]) -> list[str]:
        # one form field per file: Label Studio reads request.FILES by field name, so a shared name keeps one
        files = [(f"file{i}", (t.name.rsplit("/", 1)[-1], t.image)) for i, t in enumerate(tasks)]
        params = {"commit_to_project": "false"}
        answer = self._json("POST", f"/api/projects/{self._id()}/import", params=params, files=files)
        ids = [int(i) for i in answer.get("file_upload_ids", [])]
        if len(ids) != len(tasks):
            raise self._error(f"took {len(tasks)} images but says it stored {len(ids)}")
        listed = self._json("GET", f"/api/projects/{self._id()}/file-uploads", params={"ids": json.dumps(ids)})
        where = {int(f["id"]): str(f["file"]) for f in listed}
        return [f"/data/{where[i]}" for i in ids]

    def _headers(self) -> dict[str, str]:
        if self._auth is None:
            # A personal access token (a JWT, Label Studio >= 1.14) is a refresh token: it buys a
            # short-lived access token; a legacy token is sent as it is.
            if self._token.count(".") == 2:
                access = self._send("POST", "/api/token/refresh", {}, json={"refresh": self._token})
                self._auth = {"Authorization": f"Bearer {self._checked(access).json()['access']}"}
            else:
                self._auth = {"Authorization": f"Token {self._token}"}
        return self._auth

    def _send(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise self._error(f"cannot be reached: {type(exc).__name__}: {exc}") from None

    def _maybe(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = self._send(method, path, self._headers(), **kwargs)
        if response.status_code in (401, 403):
            raise self._error(
                f"refused the token ({response.status_code}): check labelstudio.token_env / token_file "
                "(a legacy token needs the server's --enable-legacy-api-token)"
            )
        if response.status_code == 404:
            return 404, None
        return response.status_code, self._checked(response).json()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        status, answer = self._maybe(method, path, **kwargs)
        if status == 404:
            raise self._error(f"{method} {path}: not found (404)")
        return answer

    def _call(self, method: str, path: str) -> httpx.Response:
        return self._checked(self._send(method, path, self._headers()))

    def _checked(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            body = response.text[:300].replace("\n", " ")
            raise self._error(f"{response.request.method} {response.request.url.path}: {response.status_code} {body}")
        return response

    def _error(self, what: str) -> LabelingToolUnavailable:
        return LabelingToolUnavailable(f"Label Studio at {self.url} (labelstudio.url): {what}")


def _task_json(task: NewTask, image_ref: str) -> dict[str, Any]:
    result = [
        {
            "id": f"r{i}",
            "type": "rectanglelabels",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "original_width": task.width,
            "original_height": task.height,
            "image_rotation": 0,
            "value": {
                "rotation": 0,
                "x": r.x,
                "y": r.y,
                "width": r.width,
                "height": r.height,
                "rectanglelabels": [r.label],
            },
            "score": r.score,
        }
        for i, r in enumerate(task.regions)
    ]
    prediction = {"model_version": task.model_version, "score": round(task.score, 5), "result": result}
    data = {TO_NAME: image_ref, SHA_KEY: task.image_sha256, NAME_KEY: task.name}
    return {"data": data, "predictions": [prediction]}


def _labeled(task: dict[str, Any]) -> LabeledTask:
    data = task.get("data", {})
    annotations = tuple(
        Annotation(
            int(a["id"]),
            str(a.get("updated_at") or a.get("created_at") or ""),
            bool(a.get("was_cancelled")),
            tuple(_regions(a.get("result") or [])),
        )
        for a in task.get("annotations") or []
    )
    ref = str(data.get(TO_NAME, ""))
    name = str(data.get(NAME_KEY) or ref.rsplit("/", 1)[-1])
    return LabeledTask(int(task["id"]), name, ref, str(data.get(SHA_KEY, "")), annotations)


def _regions(result: list[dict[str, Any]]) -> list[Region]:
    regions = []
    for r in result:
        value = r.get("value", {})
        if r.get("type") != "rectanglelabels" or not value.get("rectanglelabels"):
            continue
        regions.append(
            Region(
                str(value["rectanglelabels"][0]),
                float(value["x"]),
                float(value["y"]),
                float(value["width"]),
                float(value["height"]),
            )
        )
    return regions
