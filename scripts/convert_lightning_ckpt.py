#!/usr/bin/env python
"""Convert a PyTorch Lightning checkpoint of a released baseline (DAEFR: ``HQ_codebook.ckpt``, ``LQ_codebook.ckpt``,
the association checkpoint, ``DAEFR_model.ckpt``) into a BasicSR-style ``{'params': state_dict}`` file.

The file is read by the package's one loader: ``weights_only`` (Lightning's pickled trainer objects become inert
placeholders; nothing in the file is imported or run), the module's ``state_dict`` with the training-loss keys
(``loss.*``) dropped. It is then loaded strictly into the network (``--arch`` with the release configuration, or
``network_g`` of ``--opt``), which maps the release's key layout (``vqvae.`` prefixes, the top-level index
transformer, DAEFR's unprefixed autoencoder keys), and saved with the official key names. One line reports what
was dropped; a file that does not fit the network is refused in one line. The output is written atomically and
never over the input.

Examples::

    python scripts/convert_lightning_ckpt.py HQ_codebook.ckpt HQ_codebook.pth --arch VQVAEGAN
    python scripts/convert_lightning_ckpt.py DAEFR_model.ckpt DAEFR_model.pth --arch DAEFR
    python scripts/convert_lightning_ckpt.py assoc.ckpt assoc.pth --opt options/train/daefr/association.yml
"""
import argparse
import sys
from os import path as osp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('input', help='Lightning checkpoint (.ckpt)')
    parser.add_argument('output', help='BasicSR-style file to write (.pth)')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--arch', help='registered arch built with its default (release) arguments, e.g. VQVAEGAN, '
                       'DAEFRAssociation, DAEFR')
    group.add_argument('--opt', help='option file whose network_g describes the network')
    args = parser.parse_args(argv)

    import basicsr_sinca  # noqa: F401  (registers the archs)
    from basicsr.archs import build_network

    from basicsr_sinca.utils.checkpoint import load_state_dict_report, read_state_dict
    from basicsr_sinca.utils.file_io import atomic_torch_save
    from basicsr_sinca.utils.inference import build_net_from_options
    from basicsr_sinca.utils.options import OptionError
    try:
        if osp.exists(args.output) and osp.samefile(args.input, args.output):
            raise OptionError(f'{args.output}: is the input; choose another output file')
        net = build_net_from_options(args.opt) if args.opt else build_network({'type': args.arch})
        state_dict, used = read_state_dict(args.input, 'state_dict', ('params', 'params_ema', 'state_dict'))
        load_state_dict_report(net, state_dict, strict=True, source=f'{args.input} [{used}]')
    except (OptionError, FileNotFoundError, ValueError, KeyError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except Exception as err:  # e.g. a file torch cannot read safely
        print(f'error: {args.input}: {type(err).__name__}: {str(err).splitlines()[0]}', file=sys.stderr)
        return 2
    out = net.state_dict()
    atomic_torch_save({'params': out}, args.output)
    print(f'{args.input} [{used}]: {len(out)} tensors of {type(net).__name__} -> {args.output}')
    return 0


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
