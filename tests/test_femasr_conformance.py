"""Golden cases femasr_hq, femasr_x4, femasr_x2: training forward, GT-index loss, test-time padding (float64)."""
import pytest
import torch
from golden import assert_close, load_case

from basicsr_sinca.archs.femasr_arch import FeMaSRNet


def _hooks(net, store):
    handles = []
    for j, block in enumerate(net.multiscale_encoder.blocks):
        handles.append(block.register_forward_hook(lambda m, i, o, j=j: store.__setitem__(f'enc.blocks.{j}', o)))
    for k, block in enumerate(net.decoder_group):
        handles.append(block.register_forward_hook(lambda m, i, o, k=k: store.__setitem__(f'dec.{k}', o)))
    handles.append(net.before_quant_group[0].register_forward_hook(
        lambda m, i, o: store.__setitem__('feat_to_quant', o)))
    handles.append(net.after_quant_group[0].register_forward_hook(lambda m, i, o: store.__setitem__('after_quant', o)))
    handles.append(net.after_quant_group[0].register_forward_hook(lambda m, i, o: store.__setitem__('z_q', i[0])))
    handles.append(net.multiscale_encoder.register_forward_pre_hook(
        lambda m, i: store.__setitem__('padded_input', i[0])))
    return handles


@pytest.mark.parametrize('name', ['femasr_hq', 'femasr_x4', 'femasr_x2'])
def test_femasr_golden(name):
    case, golden_init = load_case(name)
    net = FeMaSRNet(**case['constructor']).double().eval()
    net.load_state_dict(golden_init.build_state_dict(case), strict=True)
    assert list(net.state_dict()) == _official_order(case)  # same names, same order (incl. Swin buffers)
    tol = case['tolerance']['float64_run']
    inputs = {k: golden_init.make_input(**v) for k, v in case['inputs'].items()}
    store = {}
    handles = _hooks(net, store)
    try:
        with torch.no_grad():
            for call in case['calls']:
                store.clear()
                out = call['outputs']
                if call['name'] == 'forward':
                    image, loss, sem, indices = net(inputs['x'])
                    store.update(image=image, codebook_loss=loss, semantic_loss=sem, indices=indices[0])
                elif call['name'] == 'forward_gt':
                    gt_indices = inputs['gt_indices_src'].floor().long()
                    image, loss, sem, indices = net(inputs['x'], [gt_indices])
                    store.update(gt_indices=gt_indices, codebook_loss=loss, semantic_loss=sem)
                else:
                    x = inputs[{'test': 'x', 'test_odd': 'x_odd', 'test_big': 'x_big'}[call['name']]]
                    store['image'] = net.test(x)
                    store['indices'] = _last_indices(net, store['padded_input'])
                for key, ref in out.items():
                    assert_close(f"{call['name']}.{key}", store[key], ref, tol)
    finally:
        for h in handles:
            h.remove()


def _official_order(case):
    import os

    from golden import GOLDEN_DIR
    with open(os.path.join(GOLDEN_DIR, f"{case['case']}.keys.tsv")) as f:
        return [line.split('\t')[0] for line in f if line.strip()]


def _last_indices(net, padded):
    z, _ = net.encode(padded)
    return net.bottleneck(z, net.codebook)[1]['indices'][:, None]
