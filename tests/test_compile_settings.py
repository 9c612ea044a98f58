"""Inductor's compile workers: one on CPU, a few on CUDA (Triton compiles each kernel for seconds)."""

from __future__ import annotations

import os

import torch

from cell2location_nf.inference import compile as compile_settings


def test_cpu_compiles_in_process_and_cuda_in_a_few_workers(monkeypatch):
    monkeypatch.setattr(compile_settings, "USER_SET_COMPILE_THREADS", False)
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    assert compile_settings.compile_threads_for(torch.device("cpu")) == 1
    workers = compile_settings.compile_threads_for(torch.device("cuda"))
    assert workers == min(compile_settings.GPU_COMPILE_THREADS, len(os.sched_getaffinity(0)))


def test_the_users_setting_wins_on_either_device(monkeypatch):
    monkeypatch.setattr(compile_settings, "USER_SET_COMPILE_THREADS", True)
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "3")
    assert compile_settings.compile_threads_for(torch.device("cuda")) == 3
    assert compile_settings.compile_threads_for(torch.device("cpu")) == 3
