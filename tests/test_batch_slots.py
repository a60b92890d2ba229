"""Reusable shared batch buffers: the same batches as torch's default hand-over, buffers
reused while the consumer lets go, never overwritten while it holds on."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler, default_collate

from models.batch_slots import SlotBatch, SlotCollate, slot_batches


class Frames(Dataset):
    """Deterministic image-like samples of mixed dtypes, as a decoded frame has."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int):
        image = torch.full((3, 16, 24), i % 251, dtype=torch.uint8)
        return {"image": image, "boxes": torch.arange(4, dtype=torch.float32) + i, "id": i}


def loader(slots: bool, workers: int = 2, **kwargs) -> DataLoader:
    return DataLoader(Frames(), batch_size=4, sampler=SequentialSampler(range(64)), num_workers=workers,
                      collate_fn=SlotCollate(default_collate, workers) if slots else default_collate, **kwargs)


def expected() -> list[dict]:
    return list(loader(slots=False, workers=0))


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("image", "boxes", "id"))


def test_batches_match_torch_default_and_buffers_are_reused():
    want = expected()
    got, pointers = [], []
    for batch in slot_batches(loader(slots=True)):
        pointers.append(batch["image"].data_ptr())
        got.append({k: v.clone() for k, v in batch.items()})  # a batch is valid until the next one
    assert len(got) == len(want) and all(same(a, b) for a, b in zip(got, want))
    assert len(set(pointers)) < len(pointers)  # the same buffers came back


def test_a_consumer_that_keeps_batches_never_sees_them_overwritten():
    kept = list(loader(slots=True))  # no slot_batches: nothing is released, buffers run out
    assert any(isinstance(b, SlotBatch) for b in kept) and not all(isinstance(b, SlotBatch) for b in kept)
    batches = [b.batch if isinstance(b, SlotBatch) else b for b in kept]
    assert all(same(a, b) for a, b in zip(batches, expected()))


def test_passes_after_an_early_break_start_clean_with_persistent_workers():
    data = loader(slots=True, persistent_workers=True)
    for i, _ in enumerate(slot_batches(data)):
        if i == 2:
            break
    for _ in range(2):
        got = [{k: v.clone() for k, v in b.items()} for b in slot_batches(data)]
        assert all(same(a, b) for a, b in zip(got, expected())) and len(got) == 16


def test_without_workers_it_is_the_plain_collate():
    batches = list(slot_batches(loader(slots=True, workers=0)))
    assert all(isinstance(b, dict) for b in batches) and all(same(a, b) for a, b in zip(batches, expected()))
