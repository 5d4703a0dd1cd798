"""Where jobs put what they make: an output area in an object store, and scratch folders.

A job's files are the objects under ``jobs/<id>/files/`` of the server's object store (a local
folder by default, S3 at scale), so any process can serve them, whichever one ran the job. Work
that needs real files (SQLite writers, archive writers) happens in the job's scratch folder,
``<scratch>/<id>/`` on the host running it, and moves each finished file into the output area;
the scratch folder is removed when the job ends, whatever happens. Runners share this layout,
so that any of them can remove what a job of another left behind.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from offmaps.errors import JobNotFoundError, OffmapsError
from offmaps.jobs.store import check_job_id
from offmaps.storage import ObjectStore, prefixed

__all__ = ["JobFiles"]

_log = logging.getLogger(__name__)


class JobFiles:
    """The output areas and scratch folders of jobs.

    Args:
        objects: the object store the output areas are prefixes of.
        scratch: the folder that holds one scratch folder per running job.
    """

    def __init__(self, objects: ObjectStore, scratch: Path) -> None:
        self.objects = objects
        self.scratch_root = scratch

    def output(self, job_id: str) -> ObjectStore:
        """The output area of a job: its files, keyed by their paths in the job's result."""
        return prefixed(self.objects, f"jobs/{check_job_id(job_id)}/files")

    def scratch(self, job_id: str) -> Path:
        """The scratch folder of a job (made by :meth:`make_scratch`)."""
        return self.scratch_root / check_job_id(job_id)

    def make_scratch(self, job_id: str) -> Path:
        """A new, empty scratch folder for a job (private to this user); what an earlier run
        left there is removed first."""
        self.remove_scratch(job_id)
        folder = self.scratch(job_id)
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)
        return folder

    def remove_scratch(self, job_id: str) -> None:
        """Remove a job's scratch folder, if there is one."""
        folder = self.scratch(job_id)
        try:
            # refuses a symbolic link in the folder's place, and never follows one inside it
            shutil.rmtree(folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            _log.warning("cannot remove the scratch folder %s: %s", folder, exc)

    def remove_output(self, job_id: str) -> None:
        """Remove every object of a job.

        Raises:
            StorageError: the object store failed; what is left is removed by the next try.
        """
        prefix = f"jobs/{check_job_id(job_id)}/"
        for info in list(self.objects.list(prefix)):
            self.objects.delete(info.key)

    def remove(self, job_id: str) -> None:
        """Remove a job's objects and scratch folder; a failure of the object store is logged,
        not raised, so that a job can always be ended (its objects go when the job is deleted)."""
        self.remove_scratch(job_id)
        try:
            self.remove_output(job_id)
        except OffmapsError as exc:
            _log.warning("cannot remove the files of job %s: %s", job_id, exc)

    def iter_scratch(self) -> Iterator[str]:
        """The ids of the jobs that have a scratch folder here."""
        try:
            entries = list(self.scratch_root.iterdir())
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                yield check_job_id(entry.name)
            except JobNotFoundError:
                continue  # not one of ours
