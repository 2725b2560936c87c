"""utils/checkpoint.py: the package's one loader of state dicts (weights_only) and its one-line mismatch report."""
import pickle

import pytest
import torch
from torch import nn

from basicsr_sinca.utils.checkpoint import OpaqueObject, load_state_dict_report, load_untrusted, read_state_dict


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_basicsr_style_keys_fallbacks_and_ddp_prefix(tmp_path):
    sd = _net().state_dict()
    other = {k: v + 1 for k, v in sd.items()}
    torch.save({'params': sd, 'params_ema': other}, tmp_path / 'both.pth')
    got, key = read_state_dict(str(tmp_path / 'both.pth'), 'params')
    assert key == 'params' and all(torch.equal(got[k], sd[k]) for k in sd)
    got, key = read_state_dict(str(tmp_path / 'both.pth'))  # params_ema preferred by default
    assert key == 'params_ema' and torch.equal(got['0.weight'], other['0.weight'])
    torch.save({'params': {f'module.{k}': v for k, v in sd.items()}}, tmp_path / 'ddp.pth')
    got, key = read_state_dict(str(tmp_path / 'ddp.pth'), 'params_ema')  # falls back to params
    assert key == 'params' and set(got) == set(sd)
    torch.save(sd, tmp_path / 'raw.pth')
    got, key = read_state_dict(str(tmp_path / 'raw.pth'))
    assert key is None and set(got) == set(sd)


def test_bad_files_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint not found: .*nope.pth'):
        read_state_dict(str(tmp_path / 'nope.pth'))
    torch.save({'epoch': 3, 'optimizer': {'lr': 0.1}}, tmp_path / 'state.pth')
    with pytest.raises(ValueError, match=r"state.pth: no state dict under 'params_ema'.*top-level keys: \['epoch'"):
        read_state_dict(str(tmp_path / 'state.pth'))


class _Payload:
    """Unpickling this would call ``fn(*args)``: the loader must never do it."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_untrusted_pickles_are_not_executed(tmp_path):
    """Foreign globals (Lightning's trainer objects, or worse) become inert placeholders: the weights load, nothing
    runs; a file that reaches for modules torch never lets through is refused in one line."""
    import os

    from fake_lightning import ModelCheckpoint
    marker = tmp_path / 'executed'
    foreign = {'params': {'w': torch.ones(1)}, 'callbacks': {ModelCheckpoint: {}},
               'payload': _Payload(open, str(marker), 'w')}
    torch.save(foreign, tmp_path / 'foreign.pth')
    with pytest.raises(Exception, match='(?i)weights_only|unsupported|global'):
        torch.load(tmp_path / 'foreign.pth', weights_only=True)  # what plain safe loading says
    state_dict, key = read_state_dict(str(tmp_path / 'foreign.pth'), 'params')
    assert key == 'params' and torch.equal(state_dict['w'], torch.ones(1))
    ckpt = load_untrusted(str(tmp_path / 'foreign.pth'))
    assert isinstance(ckpt['payload'], OpaqueObject) and list(ckpt['callbacks'].values()) == [{}]
    torch.save({'params': {'w': torch.ones(1)}, 'x': _Payload(os.system, f'touch {marker}')}, tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match=r"evil.pth: refused: it references \['posix.system'\]"):
        read_state_dict(str(tmp_path / 'evil.pth'), 'params')
    assert not marker.exists()


def test_report_names_missing_unexpected_and_mismatched_keys():
    net = _net()
    sd = {k: v.clone() for k, v in _net().state_dict().items()}
    assert load_state_dict_report(net, sd) == ''
    before = net[2].weight.clone()
    sd.pop('0.bias')
    sd['3.weight'] = torch.zeros(1)
    sd['2.weight'] = torch.zeros(2, 5, 1, 1)
    report = load_state_dict_report(net, sd, strict=False, source='ckpt.pth')
    assert report.startswith('ckpt.pth does not match Sequential: 1 missing keys (0.bias); 1 unexpected keys '
                             '(3.weight); 1 shape mismatches (e.g. 2.weight: file (2, 5, 1, 1) vs model (2, 4, 1, 1))')
    assert torch.equal(net[2].weight, before)  # a mis-shaped key is never loaded
    with pytest.raises(ValueError, match='ckpt.pth does not match Sequential: 1 missing keys'):
        load_state_dict_report(net, sd, strict=True, source='ckpt.pth')


def test_malicious_files_refused_through_the_entry_even_when_torch_defaults_to_unsafe(tmp_path, sr_pairs):
    """With torch's old default forced (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, what torch < 2.6 does), a file that
    would run a command when unpickled is refused in one line as ``path.resume_state`` and as
    ``pretrain_network_g``; the command never runs. The file really is malicious: a plain ``torch.load`` runs it."""
    import os
    import subprocess
    import sys

    from helpers import entry_cmd, sub_env, tiny_sr_options, write_yaml
    marker = tmp_path / 'executed'
    evil = tmp_path / 'evil.pth'
    torch.save({'params': {'w': torch.ones(1)}, 'x': _Payload(os.system, f'touch {marker}')}, evil)
    env = dict(sub_env(), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')

    for key in ('resume_state', 'pretrain_network_g'):
        opt = tiny_sr_options(sr_pairs, f'evil_{key}', total_iter=2)
        opt['path'][key] = str(evil)
        proc = subprocess.run(entry_cmd('train', '-opt', write_yaml(tmp_path / f'{key}.yml', opt)), cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]  # after BasicSR's log of the run so far, no traceback
        assert last.startswith('basicsr_sinca: error:') and 'evil.pth' in last and 'posix.system' in last, proc.stderr
        assert 'Traceback' not in proc.stderr
        assert not marker.exists(), key

    subprocess.run([sys.executable, '-c', f'import torch; torch.load({str(evil)!r})'], env=env, capture_output=True)
    assert marker.exists(), 'the test file is not malicious after all'


def test_non_strict_loading_refuses_another_networks_weights_and_says_what_loaded():
    """strict_load_g: false (CodeFormer's stage 2/3) must not train from nothing: FeMaSR weights into a CodeFormer
    load no key and fail; a codebook of another size (a part in the file none of whose keys load) fails; the
    legitimate case (the VQGAN's parts into SinCA-CodeFormer, the transformer new) loads and reports per part."""
    from helpers import TINY_FEMASR_HQ, TINY_VQGAN

    from basicsr_sinca.archs.codeformer_arch import SinCACodeFormer, VQAutoEncoder
    from basicsr_sinca.archs.femasr_arch import FeMaSRNet
    torch.manual_seed(0)
    net = SinCACodeFormer(bottleneck={'type': 'sinca', 'num_layers': 1, 'num_heads': 4}, connect_list=['16', '32'],
                          **TINY_VQGAN)
    with pytest.raises(ValueError, match=r'nothing loaded \(is it the right file\?\)'):
        load_state_dict_report(net, FeMaSRNet(**TINY_FEMASR_HQ).state_dict(), strict=False, source='femasr.pth')
    other_codebook = VQAutoEncoder(**dict(TINY_VQGAN, codebook_size=32)).state_dict()
    with pytest.raises(ValueError, match=r'^quantize: in the file but none of its keys load'):
        load_state_dict_report(net, other_codebook, strict=False, source='vqgan32.pth')
    before = {k: v.clone() for k, v in net.state_dict().items()}
    vqgan = VQAutoEncoder(**TINY_VQGAN).state_dict()
    report = load_state_dict_report(net, vqgan, strict=False, source='vqgan.pth')
    assert 'loaded from the file: encoder ' in report and 'quantize 1/1' in report
    loaded = [k for k in vqgan if k in before]
    assert loaded and all(torch.equal(net.state_dict()[k], vqgan[k]) for k in loaded)
    n_gen = sum(k.startswith('generator.') for k in before)
    assert f'generator {n_gen}/{n_gen}' in report
