"""File storage helpers shared by the apps."""

from django.core.files.storage import Storage


def delete_tree(storage: Storage, path: str) -> None:
    """Delete every file under `path` in `storage` (directories are left to the storage)."""
    if not storage.exists(path):
        return
    directories, files = storage.listdir(path)
    for name in files:
        storage.delete(f"{path}/{name}")
    for name in directories:
        delete_tree(storage, f"{path}/{name}")
