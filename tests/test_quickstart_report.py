"""The quickstart's report logic on fixed numbers: seed-noise statements and the metric conventions per task."""
import numpy as np
import pytest

from basicsr_sinca.quickstart import TASKS, build_parser, fidelity, lq_reference, markdown, separations


def table(**rows):
    return {name: {'psnr': v, 'ssim': (0.5, 0.0), 'lpips': None, 'niqe': None, 'psnr_to_prior': (20.0, 0.0),
                   'latent_mse': (0.1, 0.0)} for name, v in rows.items()}


def test_separations_use_twice_the_pooled_std():
    t = table(a=(25.0, 0.1), b=(24.0, 0.2), c=(23.9, 0.3))
    pairs = {(a, b): (round(d, 6), round(s, 6), ok) for a, b, d, s, ok in separations(t)}
    # a-b: 1.0 > 2 * sqrt((0.01 + 0.04) / 2) = 0.316; b-c: 0.1 < 2 * sqrt(0.065) = 0.51
    assert pairs[('a', 'b')] == (1.0, round(np.sqrt(0.025), 6), True)
    assert pairs[('b', 'c')] == (0.1, round(np.sqrt(0.065), 6), False)
    assert pairs[('a', 'c')][2] is True and len(pairs) == 3


def test_report_states_the_lq_row_and_the_noise_lines():
    t = table(nearest=(23.0, 0.1), sinca=(25.0, 0.1))
    refs = {'LQ input': {'psnr': 24.0, 'ssim': 0.6, 'lpips': None, 'niqe': 5.0, 'psnr_to_prior': 22.0},
            'prior on GT (upper bound)': {'psnr': 27.0, 'ssim': 0.8, 'lpips': None, 'niqe': 4.0},
            'GT': {'psnr': None, 'ssim': None, 'lpips': None, 'niqe': 3.0}}
    split = {'train_crops': 10, 'train_photos': ['a'], 'eval_crops': 2, 'eval_photos': ['b'], 'crop_size': 64,
             'niqe_crops': 1, 'niqe_crop_size': 192}
    timings = dict.fromkeys(('data', 'prior', 'restore', 'eval', 'total'), 1.0)
    text = markdown('blind', t, refs, {'lpips': 'no weights', 'niqe': ''}, split, [0, 1, 2], timings,
                    {'source': 'shipped x'})
    assert 'Above the LQ input row (24.00 dB): sinca.' in text
    assert 'Beyond seed noise (PSNR difference > 2 × pooled std): sinca > nearest (+2.00 dB).' in text
    assert 'Within seed noise: none.' in text and 'reconstructs the held-out GT at 27.00 dB' in text


def test_sr_metrics_are_y_channel_with_border_and_the_lq_row_is_bicubic():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = gt.copy()
    out[:2] = 0  # differs only inside the 2-pixel border the SR metric crops
    assert TASKS['sr']['crop_border'] == 2 and fidelity([out], [gt], 'sr')['psnr'] == float('inf')
    assert fidelity([out], [gt], 'blind')['psnr'] < 30
    # a pure blue change moves the Y channel by 24.966/255 per unit: PSNR from the definition
    blue = gt.astype(np.int16)
    blue[..., 0] = np.clip(blue[..., 0] + 10, 0, 255)
    diff_y = (blue[..., 0] - gt[..., 0].astype(np.int16))[2:-2, 2:-2] * 24.966 / 255
    expected = 10 * np.log10(255**2 / np.mean(diff_y**2))
    assert fidelity([blue.astype(np.uint8)], [gt], 'sr')['psnr'] == pytest.approx(expected, abs=1e-3)
    small = [gt[:8, :8]]
    assert lq_reference(small, 'sr', 16)[0].shape == (16, 16, 3) and lq_reference(small, 'blind', 8) is small


def test_parser_refuses_unknown_tasks_and_bottlenecks(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(['--task', 'denoise'])
    with pytest.raises(SystemExit):
        build_parser().parse_args(['--bottlenecks', 'sinca', 'vq'])
    assert "invalid choice: 'vq'" in capsys.readouterr().err


@pytest.mark.parametrize('task', sorted(TASKS))
def test_readme_quotes_the_recorded_default_runs(task):
    """The default runs README quotes are recorded in docs/: three seeds of all five bottlenecks at the task's
    default schedule with the shipped prior; the prior reconstructs the held-out crops at >= 24 dB, the sinca row is
    above the LQ row, and every row of README's table is the recorded mean ± std."""
    import json
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    res = json.loads((root / 'docs' / f'quickstart_{task}_results.json').read_text())
    assert res['task'] == task and res['seeds'] == [0, 1, 2] and res['iters'] == TASKS[task]['iters']
    assert res['bottlenecks'] == ['nearest', 'index', 'sa', 'ca', 'sinca'] and not res['prior']['trained_here']
    refs = res['references']
    assert refs['prior on GT (upper bound)']['psnr'] >= 24
    assert res['summary']['sinca']['psnr']['mean'] > refs[TASKS[task]['lq_label']]['psnr']
    readme = (root / 'README.md').read_text()
    header = '**`make quickstart`**' if task == 'blind' else '**`make quickstart QUICKSTART_ARGS="--task sr"`**'
    table = readme.split(header)[1].split('\n\n')[1]
    for name, row in res['summary'].items():
        psnr, ssim = row['psnr'], row['ssim']
        assert f"| {name} | {psnr['mean']:.2f} ± {psnr['std']:.2f} | {ssim['mean']:.4f} ± {ssim['std']:.4f} |" in table
    lq = refs[TASKS[task]['lq_label']]
    assert f"| *{TASKS[task]['lq_label']}* | {lq['psnr']:.2f} | {lq['ssim']:.4f} |" in table
    total = res['timings_s']['total']
    assert f"{header}, {total // 60:.0f} min {total % 60:.0f} s in all" in readme
