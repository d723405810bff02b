"""Static files shipped in the package (the dashboard's, the API docs'), each served under a URL
that carries a digest of its contents: a file's URL changes with it, so browsers may cache it for
good. Nothing is read from disk after startup but the files themselves."""

import hashlib
from pathlib import Path

from starlette.responses import FileResponse, Response


class Assets:
    """Every file under `directory`, by its name relative to it."""

    def __init__(self, directory: Path) -> None:
        self.files: dict[str, tuple[Path, str]] = {}
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
                self.files[path.relative_to(directory).as_posix()] = (path, digest)

    def url(self, base: str, name: str) -> str:
        """The URL of `name` served under the URL path `base`."""
        _, digest = self.files[name]
        return f"{base}/{name}?v={digest}"

    def response(self, name: str) -> Response:
        found = self.files.get(name)
        if found is None:
            return Response("Not found.", status_code=404, media_type="text/plain")
        path, _ = found
        return FileResponse(
            path,
            headers={
                "Cache-Control": "public, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )
