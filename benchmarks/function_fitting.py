#!/usr/bin/env python3
"""The paper's section 4.1: self-moving points fit functions better than points that stay put.

    python benchmarks/function_fitting.py                      # 3000 steps, prints the errors, writes the figure
    python benchmarks/function_fitting.py --steps 300 --json   # shortened (the test runs this)

An SMP with 204 points (one channel) is fitted to two sinusoid-based functions sampled on a 51x51 grid over
[-1, 1]^2, by Adam on the mean squared error, twice from the same start: with moving points (positions
learned) and with fixed points (positions frozen where they start; radii and values learned in both).
The paper does not give its two functions' formulas; these are a product of sines (smooth, the same
frequency everywhere) and a radial chirp (its frequency grows away from the centre, where moving points
can gather).
"""
import argparse
import json
import math
from pathlib import Path

import torch

from smpconv_models.smp import SMPKernel, kernel_grid

GRID = 51
POINTS = 204
FUNCTIONS = {
    'sines': lambda x, y: torch.sin(3 * math.pi * x) * torch.cos(2 * math.pi * y),
    'chirp': lambda x, y: torch.sin(4 * math.pi * (x ** 2 + y ** 2)),
}


def target(name: str) -> torch.Tensor:
    """The function sampled on the kernel grid, in the kernel's layout (row 0 is y = +1)."""
    x, y = kernel_grid([GRID, GRID], dtype=torch.float64)
    return FUNCTIONS[name](x.expand(GRID, GRID), y.expand(GRID, GRID))


def fit(goal: torch.Tensor, moving: bool, steps: int, seed: int = 0, lr: float = 1e-2):
    """Fit an SMP to `goal`; returns the final mean squared error and the fitted kernel."""
    torch.manual_seed(seed)
    smp = SMPKernel(1, POINTS, GRID, init_radius=0.15, dtype=torch.float64)
    with torch.no_grad():  # points spread over the whole domain (not the centre-heavy ImageNet init)
        smp.positions.uniform_(-1, 1)
        smp.weights.zero_()
    smp.positions.requires_grad_(moving)
    optimizer = torch.optim.Adam([p for p in smp.parameters() if p.requires_grad], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        loss = (smp()[0] - goal).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        smp.project_radii()
    with torch.no_grad():
        fitted = smp()[0]
    return (fitted - goal).square().mean().item(), fitted, smp


def save_figure(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(len(results), 3, figsize=(9.6, 3.3 * len(results)), squeeze=False)
    for row, (name, result) in zip(axes, results.items()):
        panels = [('target', result['target'], None), ('moving points', result['moving'][1], result['moving'][2]),
                  ('fixed points', result['fixed'][1], result['fixed'][2])]
        for axis, (title, image, smp) in zip(row, panels):
            axis.imshow(image.numpy(), cmap='RdBu_r', vmin=-1.2, vmax=1.2, extent=(-1, 1, -1, 1))
            if smp is not None:
                positions = smp.positions.detach().numpy()
                axis.scatter(positions[:, 0], positions[:, 1], s=2, c='k')
                mse = result['moving' if 'moving' in title else 'fixed'][0]
                title = f'{title}: MSE {mse:.2e}'
            axis.set_title(f'{name}, {title}', fontsize=9)
            axis.set_xlim(-1, 1)
            axis.set_ylim(-1, 1)
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=3000)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--figure', type=Path, default=Path('function_fitting.png'))
    parser.add_argument('--json', action='store_true', help='print the errors as JSON, draw no figure')
    args = parser.parse_args()

    results = {}
    for name in FUNCTIONS:
        goal = target(name)
        results[name] = dict(target=goal, moving=fit(goal, True, args.steps, args.seed),
                             fixed=fit(goal, False, args.steps, args.seed))
    errors = {name: {'moving': r['moving'][0], 'fixed': r['fixed'][0]} for name, r in results.items()}
    if args.json:
        print(json.dumps(errors))
        return
    print(f'{POINTS} points on a {GRID}x{GRID} grid, {args.steps} Adam steps, mean squared error:')
    print('| function | moving points | fixed points | fixed / moving |\n|---|---|---|---|')
    for name, error in errors.items():
        print(f"| {name} | {error['moving']:.2e} | {error['fixed']:.2e} | {error['fixed'] / error['moving']:.1f} |")
    save_figure(results, args.figure)
    print(f'figure: {args.figure}')


if __name__ == '__main__':
    main()
