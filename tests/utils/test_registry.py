"""Registry hygiene: importing basicsr_sinca adds exactly its own names and never touches BasicSR's."""
import json
import subprocess
import sys

from helpers import sub_env

# every name basicsr_sinca registers, per BasicSR registry (plus our bottleneck registry)
EXPECTED = {
    'arch': {'SinCATransformer', 'SinCAIndexTransformer', 'VQAutoEncoder', 'VQGANDiscriminator', 'SinCACodeFormer',
             'CodeFormer', 'SinCAFeMaSRNet', 'FeMaSRNet', 'VQVAEGAN', 'SinCADAEFR', 'DAEFR', 'DAEFRAssociation',
             'SinCAAdaCodeSRNet', 'AdaCodeSRNet', 'AdaCodeSRNet_Contrast', 'SinCARestoreFormer',
             'VQVAEGANMultiHeadTransformer', 'VQGANv2', 'SinCAVQFRv2', 'VQFRv2', 'VQGANv1', 'SinCAVQFRv1', 'VQFRv1',
             'StyleGAN2DiscriminatorPT', 'SWAGANDiscriminator', 'ComponentDiscriminator', 'ArcFaceResNet'},
    'model': {'CodeFormerPriorModel', 'CodeFormerStage2Model', 'CodeFormerStage3Model', 'FeMaSRLQModel',
              'VQRestorationModel', 'VQPriorModel', 'DAEFRAssociationModel', 'AdaCodeLQModel',
              'FaceRestorationModel', 'SinCASRModel'},
    'loss': {'FeatureMatchingLoss', 'CodeCrossEntropyLoss', 'LPIPSLoss', 'FeMaSRCodebookLoss', 'AdaCodeContrastLoss',
             'LPIPSStyleLoss', 'ArcFaceIdentityLoss'},
    'dataset': {'FFHQBlindDataset', 'FFHQBlindJointDataset', 'BSRGANTrainDataset', 'PairedResizeCropDataset'},
    'metric': {'calculate_lpips', 'calculate_psnr_mean_var', 'calculate_ssim_mean_var'},
}

_PROBE = r'''
import json
from basicsr.utils import registry as r
regs = {'arch': r.ARCH_REGISTRY, 'model': r.MODEL_REGISTRY, 'loss': r.LOSS_REGISTRY,
        'dataset': r.DATASET_REGISTRY, 'metric': r.METRIC_REGISTRY}
before = {k: {n: id(o) for n, o in reg} for k, reg in regs.items()}
import basicsr_sinca
after = {k: {n: (id(o), getattr(o, '__module__', '')) for n, o in reg} for k, reg in regs.items()}
import basicsr.train, basicsr.test  # BasicSR's own pipelines still import
out = {}
for k in regs:
    out[k] = {
        'new': {n: m for n, (i, m) in after[k].items() if n not in before[k]},
        'changed': [n for n, i in before[k].items() if after[k].get(n, (None,))[0] != i],
        'basicsr_count': len(before[k]),
    }
print(json.dumps(out))
'''


def test_registration_adds_only_our_names():
    proc = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True, text=True, env=sub_env(), check=True)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind, expected in EXPECTED.items():
        new = report[kind]['new']
        assert set(new) == expected, f'{kind}: registered {sorted(new)}, expected {sorted(expected)}'
        assert all(m.startswith('basicsr_sinca.') for m in new.values()), new
        assert report[kind]['changed'] == [], f'{kind}: BasicSR names shadowed: {report[kind]["changed"]}'
    assert report['arch']['basicsr_count'] >= 23 and report['model']['basicsr_count'] >= 13


EXPECTED_BOTTLENECKS = {'nearest', 'sinca', 'sa', 'ca', 'sinca_index', 'index', 'feat2index'}


def test_bottleneck_registry():
    from basicsr_sinca.utils.registry import BOTTLENECK_REGISTRY
    assert set(BOTTLENECK_REGISTRY.keys()) == EXPECTED_BOTTLENECKS


def test_package_imports_before_basicsr_and_standalone():
    code = 'import sys, basicsr_sinca; assert "basicsr" in sys.modules; import basicsr_sinca.train, basicsr_sinca.test'
    subprocess.run([sys.executable, '-c', code], env=sub_env(), check=True)


def test_import_shim_for_basicsr_1_4_2():
    # the 1.4.2 release imports rgb_to_grayscale from a module torchvision >= 0.17 no longer has
    code = ('from basicsr_sinca.compat import apply_import_shims; apply_import_shims(); '
            'from torchvision.transforms.functional_tensor import rgb_to_grayscale; import torch; '
            'assert rgb_to_grayscale(torch.rand(3, 4, 4)).shape == (1, 4, 4)')
    subprocess.run([sys.executable, '-c', code], env=sub_env(), check=True)
