"""Requests that could never run: preset resource defaults, the sinfo check, pending reasons in words."""

from __future__ import annotations

import pytest

from kdgat_core.slurm.capacity import minutes, parse_sinfo, unmet_request
from kdgat_core.slurm.resources import resolve_resources
from kdgat_core.slurm.scheduler import reason_words

# what `sinfo -h -N -o %P|%N|%c|%m|%G|%l` prints on the test cluster, plus a GPU partition with a time limit
SINFO = """debug*|vm|4|24105|gpu:2|infinite
gpu|g1|32|256000|gpu:a100:4(S:0-1)|2-00:00:00
gpu|g2|16|128000|gpu:v100:2|2-00:00:00
"""
NODES = parse_sinfo(SINFO)


def ask(**kw):
    request = {"partition": None, "cpus": 1, "mem": "1G", "gres": None, "time": "01:00:00"} | kw
    return unmet_request(nodes=NODES, **request)


def test_a_tiny_preset_asks_for_no_gpu_and_few_cpus_while_the_full_model_keeps_the_published_request():
    tiny = resolve_resources("autoencoder", "student", variant="tiny")
    assert (tiny.gpus, tiny.gres_request, tiny.cpus) == (0, None, 1)
    full = resolve_resources("autoencoder", "student")
    assert (full.gpus, full.cpus, full.mem) == (1, 16, "128G")
    # kdgat.toml still wins over the variant's defaults
    assert resolve_resources("autoencoder", "student", {"resources": {"gpus": 1}}, variant="tiny").gpus == 1


def test_a_request_that_fits_a_node_passes():
    assert ask(cpus=4, mem="20G") is None
    assert ask(partition="gpu", cpus=32, mem="200G", gres="gpu:a100:4", time="1-00:00:00") is None


def test_too_many_cpus_and_memory_names_both_and_what_the_partition_has():
    text = ask(cpus=16, mem="128G", gres="gpu:1")
    assert text.startswith("No node of the default partition debug can ever run this job")
    assert "16 CPUs" in text and "128G of memory" in text and "4 CPUs" in text and "23.5G" in text
    assert "GPU" not in text  # the node has two GPUs: that part of the request fits
    assert "-R cpus=4,mem=23G" in text


def test_gpu_type_time_limit_and_unknown_partition():
    assert "1 h100 GPU" in ask(partition="gpu", gres="gpu:h100:1")
    assert "a time limit of 3-00:00:00" in ask(partition="gpu", time="3-00:00:00")
    assert ask(partition="nope") == "There is no partition nope on this cluster; partitions: debug, gpu."
    # each alone fits some node, no node has both
    assert "No single node" in ask(partition="gpu", cpus=32, gres="gpu:v100:2")


def test_slurm_time_formats_in_minutes():
    assert [minutes(t) for t in ("infinite", "30", "1:30", "1:30:00", "2-00:00:00", "1-2")] == [
        None,
        30,
        2,
        90,
        2880,
        1560,
    ]


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("PartitionConfig", "will never start"),
        ("Resources", "waiting for CPUs, memory or GPUs"),
        ("Dependency", "depends on"),
        ("QOSGrpNodeLimit", "account or QOS"),
        ("", ""),
    ],
)
def test_pending_reasons_in_words(code, words):
    assert words in reason_words(code)
