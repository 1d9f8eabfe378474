"""Small PNG figures drawn with Pillow (already a dependency): a heatmap of a square matrix and a
bar chart of one value per item, each with its numbers on the axes."""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# A perceptually ordered dark-blue → green → yellow ramp (viridis-like), interpolated linearly.
RAMP = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
BAR = (59, 82, 139)
HIGHLIGHT = (220, 80, 40)


def ramp_colour(fraction: float) -> tuple[int, int, int]:
    fraction = min(1.0, max(0.0, fraction))
    position = fraction * (len(RAMP) - 1)
    low = min(int(position), len(RAMP) - 2)
    t = position - low
    return tuple(round(a + (b - a) * t) for a, b in zip(RAMP[low], RAMP[low + 1]))


def tick_step(count: int) -> int:
    return 1 if count <= 12 else 2 if count <= 24 else 5


def heatmap(matrix: list[list[float]], path: Path, title: str, cell: int = 18) -> None:
    """Row i, column j coloured by matrix[i][j] (scaled between its min and max), with a colour bar."""
    font = ImageFont.load_default()
    count = len(matrix)
    values = [v for row in matrix for v in row]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    left, top = 40, 30
    width = left + count * cell + 90
    image = Image.new("RGB", (width, top + count * cell + 40), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title, fill="black", font=font)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            x, y = left + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=ramp_colour((value - low) / span))
    for k in range(0, count, tick_step(count)):
        draw.text((left - 22, top + k * cell + cell // 4), str(k), fill="black", font=font)
        draw.text((left + k * cell + 2, top + count * cell + 4), str(k), fill="black", font=font)
    draw.text((left + count * cell // 2 - 15, top + count * cell + 20), "layer", fill="black", font=font)
    bar_x, bar_height = left + count * cell + 15, count * cell
    for y in range(bar_height):
        draw.line([bar_x, top + y, bar_x + 14, top + y], fill=ramp_colour(1 - y / max(1, bar_height - 1)))
    draw.text((bar_x + 18, top), f"{high:.3f}", fill="black", font=font)
    draw.text((bar_x + 18, top + bar_height - 10), f"{low:.3f}", fill="black", font=font)
    image.save(path)


def bar_chart(values: list[float], path: Path, title: str, highlighted: set[int] = frozenset(),
              legend: str = "", width_per_bar: int = 18, height: int = 220) -> None:
    """One bar per item (scaled between the minimum and the maximum value, so small differences
    show); `highlighted` items drawn in another colour, named by `legend`."""
    font = ImageFont.load_default()
    count = len(values)
    low, high = min(values), max(values)
    floor = low - 0.1 * ((high - low) or abs(high) or 1.0)
    span = (high - floor) or 1.0
    left, top = 60, 30
    image = Image.new("RGB", (left + count * width_per_bar + 20, top + height + 40), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title, fill="black", font=font)
    for i, value in enumerate(values):
        x = left + i * width_per_bar
        bar = round(height * (value - floor) / span)
        draw.rectangle([x + 2, top + height - bar, x + width_per_bar - 3, top + height],
                       fill=HIGHLIGHT if i in highlighted else BAR)
    for k in range(0, count, tick_step(count)):
        draw.text((left + k * width_per_bar + 3, top + height + 4), str(k), fill="black", font=font)
    draw.text((4, top - 4), f"{high:.4f}", fill="black", font=font)
    draw.text((4, top + height - 10), f"{floor:.4f}", fill="black", font=font)
    if legend:
        draw.rectangle([left, top + height + 22, left + 10, top + height + 32], fill=HIGHLIGHT)
        draw.text((left + 14, top + height + 22), legend, fill="black", font=font)
    image.save(path)
