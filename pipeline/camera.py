"""Camera motion from the motion prompt: parse it, plan a smooth path, warp the frames along it.

SVD reads no text, so the prompt steers a virtual camera over the finished frames instead. The three
steps are plain functions so that a job can record what each one decided:

- :func:`parse_motion_prompt` turns English or Chinese text into a :class:`CameraMove` (the moves it
  understood, in English words, and the words it did not);
- :func:`camera_path` turns the move into a :class:`CameraPath`: per-frame zoom, offset and roll,
  eased in and out and smoothed with a constant-velocity Kalman/RTS smoother;
- :func:`apply_camera` warps each frame by the path, with one extra zoom (:func:`crop_zoom`, chosen from
  the path's extremes) so that every output pixel comes from inside its source frame: no border shows.

A 2-D warp has no depth, so a dolly is rendered as a zoom and an orbit as a sideways move with a slight
banking roll; the recorded words still say what the user asked for.
"""

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal, get_args

import cv2
import numpy as np
from numpy.typing import NDArray

from pipeline.kalman import smooth_constant_velocity

Frames = NDArray[np.uint8]
Floats = NDArray[np.float64]

MoveKind = Literal["zoom", "dolly", "pan", "tilt", "roll", "orbit"]
Direction = Literal["in", "out", "left", "right", "up", "down", "clockwise", "counterclockwise"]
Speed = Literal["slow", "medium", "fast"]

PATH_SMOOTHING = 4.0
"""Kalman/RTS smoothing of the eased path (measurement-to-process noise ratio); mild, the ease is smooth."""

_REST_FRAMES = 8
"""Still frames assumed before and after the clip while smoothing (a few smoother time constants)."""

EDGE_SAFETY_PX = 0.5
"""Output corners map at least this far inside the source's outer pixel centres: covers OpenCV's
1/32-pixel fixed-point warp coordinates, so bilinear sampling never reaches past the frame."""

# Whole-clip amount of each move by speed: zoom factor, offset as a fraction of the frame side, roll in
# degrees. Orbit is a sideways move plus a banking roll. Chosen so a fast move still crops modestly.
_ZOOM_FACTOR: dict[Speed, float] = {"slow": 1.12, "medium": 1.25, "fast": 1.45}
_SHIFT: dict[Speed, float] = {"slow": 0.06, "medium": 0.12, "fast": 0.20}
_ROLL_DEG: dict[Speed, float] = {"slow": 3.0, "medium": 6.0, "fast": 10.0}
_ORBIT_SHIFT: dict[Speed, float] = {"slow": 0.05, "medium": 0.10, "fast": 0.16}
_ORBIT_ROLL_DEG: dict[Speed, float] = {"slow": 1.5, "medium": 3.0, "fast": 5.0}

_DEFAULT_DIRECTION: dict[MoveKind, Direction] = {
    "zoom": "in",
    "dolly": "in",
    "pan": "right",
    "tilt": "up",
    "roll": "clockwise",
    "orbit": "right",
}
_ACCEPTS: dict[MoveKind, dict[Direction, Direction]] = {
    "zoom": {"in": "in", "out": "out"},
    "dolly": {"in": "in", "out": "out"},
    "pan": {"left": "left", "right": "right"},
    "tilt": {"up": "up", "down": "down"},
    "roll": {
        "clockwise": "clockwise",
        "counterclockwise": "counterclockwise",
        "right": "clockwise",
        "left": "counterclockwise",
    },
    "orbit": {"left": "left", "right": "right"},
}
_KIND_OF_DIRECTION: dict[Direction, MoveKind] = {
    "left": "pan",
    "right": "pan",
    "up": "tilt",
    "down": "tilt",
    "in": "dolly",
    "out": "dolly",
    "clockwise": "roll",
    "counterclockwise": "roll",
}


@dataclass(frozen=True)
class Move:
    """One camera move: what, which way, how fast."""

    kind: MoveKind
    direction: Direction
    speed: Speed = "medium"

    def __post_init__(self) -> None:
        if self.kind not in get_args(MoveKind):
            raise ValueError(f"unknown move kind {self.kind!r}")
        if self.direction not in _ACCEPTS[self.kind].values():
            raise ValueError(f"a {self.kind} cannot go {self.direction!r}")
        if self.speed not in get_args(Speed):
            raise ValueError(f"unknown speed {self.speed!r}")

    @property
    def words(self) -> tuple[str, str, str]:
        return (self.speed, self.kind, self.direction)


@dataclass(frozen=True)
class CameraMove:
    """What a motion prompt asks of the camera: moves in English words, plus the words not understood."""

    moves: tuple[Move, ...] = ()
    unknown: tuple[str, ...] = ()

    @property
    def is_static(self) -> bool:
        return not self.moves

    @property
    def words(self) -> tuple[str, ...]:
        """The parsed move as English words, e.g. ``("slow", "zoom", "in", "slow", "pan", "left")``."""
        if self.is_static:
            return ("static",)
        return tuple(word for move in self.moves for word in move.words)

    def describe(self) -> str:
        """One line for people, e.g. ``"slow zoom in, slow pan left"`` or ``"static"``."""
        if self.is_static:
            return "static"
        return ", ".join(" ".join(move.words) for move in self.moves)


# --- parsing -------------------------------------------------------------------------------------

_Role = Literal[
    "kind", "dir", "speed", "static", "sep", "filler", "generic", "motion", "no", "from", "around", "unknown"
]


@dataclass(frozen=True)
class _Token:
    role: _Role
    kind: MoveKind | None = None
    direction: Direction | None = None
    """For a direction word, its direction; for a kind word, the direction it carries (push = dolly in)."""
    speed: Speed | None = None
    explicit: bool = False
    """A direction that can stand alone as a move ("left", 向左); "in" or a bare 上 cannot."""
    swivel: bool = False
    """摇: a pan that becomes a tilt when it goes up or down (上摇, 向上摇)."""
    text: str = ""


def _kind(kind: MoveKind, implied: Direction | None = None) -> _Token:
    return _Token("kind", kind=kind, direction=implied)


def _dir(direction: Direction, explicit: bool = True) -> _Token:
    return _Token("dir", direction=direction, explicit=explicit)


def _speed(speed: Speed) -> _Token:
    return _Token("speed", speed=speed)


def _words(*groups: tuple[str, _Token]) -> dict[str, _Token]:
    table: dict[str, _Token] = {}
    for spelled, token in groups:
        for word in spelled.split():
            table[word] = token
    return table


_ENGLISH = _words(
    ("zoom zooms zooming zoomed", _kind("zoom")),
    ("dolly dollies dollying dollied", _kind("dolly")),
    ("push pushes pushing pushed", _kind("dolly", "in")),
    ("pull pulls pulling pulled", _kind("dolly", "out")),
    ("pan pans panning panned truck trucks trucking", _kind("pan")),
    ("tilt tilts tilting tilted crane cranes craning boom booms booming pedestal", _kind("tilt")),
    ("rise rises rising", _kind("tilt", "up")),
    ("descend descends descending sink sinks sinking", _kind("tilt", "down")),
    ("roll rolls rolling rolled rotate rotates rotating rotated rotation spin spins spinning", _kind("roll")),
    ("twist twists twisting", _kind("roll")),
    ("orbit orbits orbiting orbited arc arcs arcing circle circles circling", _kind("orbit")),
    ("revolve revolves revolving", _kind("orbit")),
    ("move moves moving moved go goes going drift drifts drifting slide slides sliding", _Token("generic")),
    ("glide glides gliding travel travels traveling travelling shift shifts shifting", _Token("generic")),
    ("track tracks tracking turn turns turning head heads heading", _Token("generic")),
    ("in into inward inwards closer nearer", _dir("in", explicit=False)),
    ("forward forwards", _dir("in")),
    ("out outward outwards back away", _dir("out", explicit=False)),
    ("backward backwards", _dir("out")),
    ("left leftward leftwards", _dir("left")),
    ("right rightward rightwards", _dir("right")),
    ("up upward upwards", _dir("up")),
    ("down downward downwards", _dir("down")),
    ("clockwise cw", _dir("clockwise")),
    ("counterclockwise anticlockwise ccw", _dir("counterclockwise")),
    ("slow slowly slower gentle gently gentler subtle subtly slight slightly soft softly", _speed("slow")),
    ("calm calmly leisurely gradual gradually", _speed("slow")),
    ("medium moderate moderately normal normally steady steadily regular", _speed("medium")),
    ("fast faster quick quickly rapid rapidly swift swiftly", _speed("fast")),
    ("dramatic dramatically speedy brisk briskly", _speed("fast")),
    ("static still stationary locked fixed tripod motionless", _Token("static")),
    ("movement movements motion", _Token("motion")),
    ("no without", _Token("no")),
    ("from", _Token("from")),
    ("around round about", _Token("around")),
    ("and then while with plus also", _Token("sep")),
    ("the a an camera cam shot lens view scene frame to towards toward", _Token("filler")),
    ("on at of its it by over across", _Token("filler")),
    ("along side direction subject very really super extremely bit little smooth smoothly", _Token("filler")),
)

# Chinese has no spaces: the longest entry that matches at each position wins (拉近 before 拉).
_CHINESE = _words(
    ("推进 推近 推入 前推 推镜 推镜头 推", _kind("dolly", "in")),
    ("前进 前移 靠近 接近 逼近", _kind("dolly", "in")),
    ("拉出 拉镜 拉镜头 后拉 拉回 拉 推远 后退 后移 远离", _kind("dolly", "out")),
    ("拉近 放大", _kind("zoom", "in")),
    ("拉远 拉开 缩小", _kind("zoom", "out")),
    ("变焦 缩放", _kind("zoom")),
    ("平移 横移", _kind("pan")),
    ("摇镜 摇镜头 摇摄 摇", _Token("kind", kind="pan", swivel=True)),
    ("左摇 左移 左转", _kind("pan", "left")),
    ("右摇 右移 右转", _kind("pan", "right")),
    ("俯仰", _kind("tilt")),
    ("上摇 上移 上升 升起 升高 仰 仰拍", _kind("tilt", "up")),
    ("下摇 下移 下降 降低 俯 俯拍", _kind("tilt", "down")),
    ("旋转 转动 滚转 倾斜", _kind("roll")),
    ("环绕 围绕 绕 环拍 环移 绕行 弧形 弧线", _kind("orbit")),
    ("移动 移 滑动 滑 运镜", _Token("generic")),
    ("运动", _Token("motion")),
    ("无 没有 不要", _Token("no")),
    ("从", _Token("from")),
    ("向左 往左 朝左 向左边 向左侧", _dir("left")),
    ("向右 往右 朝右 向右边 向右侧", _dir("right")),
    ("向上 往上 朝上", _dir("up")),
    ("向下 往下 朝下", _dir("down")),
    ("向前 往前 朝前 向内 向里", _dir("in")),
    ("向后 往后 朝后 向外", _dir("out")),
    ("左", _dir("left", explicit=False)),
    ("右", _dir("right", explicit=False)),
    ("上", _dir("up", explicit=False)),
    ("下", _dir("down", explicit=False)),
    ("前 里 内 近", _dir("in", explicit=False)),
    ("后 外 远", _dir("out", explicit=False)),
    ("顺时针", _dir("clockwise")),
    ("逆时针", _dir("counterclockwise")),
    ("缓慢 缓缓 慢慢 慢速 缓 慢 轻微 轻轻 轻柔 微微 稍微 略微 徐徐 平缓 缓和", _speed("slow")),
    ("快速 迅速 急速 飞速 高速 快 猛", _speed("fast")),
    ("匀速 中速 适中 正常 平稳", _speed("medium")),
    ("静止 固定 不动 定镜 静态", _Token("static")),
    ("和 与 并 并且 然后 同时 再 接着 随后 及 且", _Token("sep")),
    ("镜头 摄像机 摄影机 相机 机位 画面 视角 地 的 着 向 往 朝 一点 一些 一下 点 些 边 侧 方 方向", _Token("filler")),
    ("主体 拍摄 进行 整体", _Token("filler")),
    # Subject motion that shares a character with a camera word: kept whole, reported as not understood.
    ("摇曳 摇摆 摇晃 转身", _Token("unknown")),
)
_LONGEST_CHINESE = max(len(word) for word in _CHINESE)

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
_SEPARATOR_MARKS = ",;.!?\uff0c\u3001\uff1b\u3002\uff01\uff1f"  # ASCII and full-width , ; . ! ? and 、
_TOKEN_PATTERN = re.compile(rf"[{_CJK}]+|(?:(?![{_CJK}])[^\W_])+|[{re.escape(_SEPARATOR_MARKS)}]")


def parse_motion_prompt(text: str) -> CameraMove:
    """Read camera moves from an English or Chinese motion prompt.

    Understands zoom, dolly (push/pull), pan, tilt, roll, orbit/arc, "static" and speed words, e.g.
    ``"slow zoom in, pan left"`` or ``"缓慢推进 向左平移"``. Clauses (split by punctuation, "and", "then",
    和, 然后 ...) may each carry a speed; a clause without one takes the prompt's first speed word, else
    medium. A move without a direction takes a default (zoom/dolly in, pan right, tilt up, roll
    clockwise, orbit right). Any move wins over "static". Words it does not understand are returned in
    ``unknown``, in the order written, so the user can see them.
    """
    if not isinstance(text, str):
        raise TypeError(f"motion prompt must be a str, got {type(text).__name__}")
    clauses: list[list[_Token]] = [[]]
    for token in _tokens(text):
        if token.role == "sep":
            clauses.append([])
        else:
            clauses[-1].append(token)
    first_speed: Speed = next((token.speed for clause in clauses for token in clause if token.speed), "medium")
    moves: list[Move] = []
    unknown: list[str] = []
    for clause in clauses:
        for move in _parse_clause(clause, first_speed, unknown):
            if move not in moves:
                moves.append(move)
    return CameraMove(tuple(moves), tuple(unknown))


def _tokens(text: str) -> Iterator[_Token]:
    lowered = re.sub(r"\b(counter|anti)[\s_-]+clockwise\b", r"\1clockwise", text.lower())
    for match in _TOKEN_PATTERN.finditer(lowered.replace("-", " ").replace("_", " ")):
        piece = match.group()
        if len(piece) == 1 and piece in _SEPARATOR_MARKS:
            yield _Token("sep", text=piece)
        elif "\u3400" <= piece[0] <= "\u9fff":
            yield from _chinese_tokens(piece)
        else:
            yield replace(_ENGLISH.get(piece, _Token("unknown")), text=piece)


def _chinese_tokens(run: str) -> Iterator[_Token]:
    unmatched = ""
    position = 0
    while position < len(run):
        for length in range(min(_LONGEST_CHINESE, len(run) - position), 0, -1):
            token = _CHINESE.get(run[position : position + length])
            if token is not None:
                break
        else:
            unmatched += run[position]
            position += 1
            continue
        if unmatched:
            yield _Token("unknown", text=unmatched)
            unmatched = ""
        yield replace(token, text=run[position : position + length])
        position += length
    if unmatched:
        yield _Token("unknown", text=unmatched)


@dataclass
class _Slot:
    kind: MoveKind
    direction: Direction | None
    absorbs: bool
    """The word carried its direction; a matching direction word after it ("push in") adds nothing."""
    swivel: bool = False

    def take(self, direction: Direction) -> bool:
        """Give this open move its direction if it can go that way."""
        kind: MoveKind = "tilt" if self.swivel and direction in ("up", "down") else self.kind
        if direction not in _ACCEPTS[kind]:
            return False
        self.kind, self.direction = kind, _ACCEPTS[kind][direction]
        return True


def _parse_clause(clause: list[_Token], first_speed: Speed, unknown_words: list[str]) -> list[Move]:
    slots: list[_Slot] = []
    pending: list[tuple[Direction, _Token]] = []
    unknown: list[_Token] = []
    speed: Speed | None = None
    generic = negate = after_from = False
    for token in clause:
        if token.speed is not None:
            speed = token.speed
        elif token.role == "unknown":
            unknown.append(token)
        elif token.role == "no":
            negate = True
        elif token.role in ("motion", "generic", "static"):
            # "no camera movement" means static; "static" itself adds no move, any move outranks it.
            negate = False
            generic = generic or token.role == "generic"
        elif token.role == "from":
            after_from = True
        elif token.role == "around":
            if slots and slots[-1].kind == "roll" and slots[-1].direction is None:
                slots[-1].kind = "orbit"  # "rotate around the subject" is an orbit
        elif token.kind is not None:
            if negate:  # "no zoom": that move is not wanted
                negate = False
            elif token.direction is not None:
                slots.append(_Slot(token.kind, token.direction, absorbs=True))
            else:
                slots.append(_slot_taking_pending(_Slot(token.kind, None, False, token.swivel), pending))
        elif token.direction is not None:
            if after_from:  # "pan from left to right": the starting side is not the direction
                after_from = False
                continue
            last = slots[-1] if slots else None
            if last is not None and last.direction is None:
                if not last.take(token.direction):  # "tilt left": the kind stands, the direction is not understood
                    unknown.append(token)
            elif not (last is not None and last.absorbs and _ACCEPTS[last.kind].get(token.direction) == last.direction):
                pending.append((token.direction, token))
    for direction, token in pending:
        # A lone direction is a move when it is unambiguous ("left", 向左) or follows "move"/移动.
        if token.explicit or generic:
            slots.append(_Slot(_KIND_OF_DIRECTION[direction], direction, absorbs=False))
        else:
            unknown.append(token)
    unknown_words.extend(token.text for token in sorted(unknown, key=lambda t: _index_of(clause, t)))
    chosen = speed or first_speed
    return [Move(s.kind, s.direction or _DEFAULT_DIRECTION[s.kind], chosen) for s in slots]


def _index_of(clause: list[_Token], token: _Token) -> int:
    return next(i for i, t in enumerate(clause) if t is token)


def _slot_taking_pending(slot: _Slot, pending: list[tuple[Direction, _Token]]) -> _Slot:
    """A new open move, given the latest waiting direction it accepts (向左平移: left, then pan)."""
    for index in range(len(pending) - 1, -1, -1):
        if slot.take(pending[index][0]):
            del pending[index]
            break
    return slot


# --- path ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CameraPath:
    """Per-frame camera pose, relative to the source frame.

    ``scale``: zoom (> 1 shows a smaller part of the frame, larger). ``dx``, ``dy``: where the view's
    centre sits, as fractions of the frame's width and height from the frame's centre (+ = right, down);
    the content moves the other way. ``rotation``: the camera's roll in degrees (+ = clockwise), so the
    content turns counter-clockwise. :func:`apply_camera` adds one constant zoom, :func:`crop_zoom`, on
    top of ``scale`` so that no border shows; it depends on the frame's aspect ratio only.
    """

    scale: Floats
    dx: Floats
    dy: Floats
    rotation: Floats

    def __post_init__(self) -> None:
        arrays = (self.scale, self.dx, self.dy, self.rotation)
        if any(np.ndim(a) != 1 for a in arrays) or len({len(a) for a in arrays}) != 1 or len(self.scale) < 1:
            raise ValueError("scale, dx, dy and rotation must be 1-D arrays of one length >= 1")
        if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(self.scale <= 0):
            raise ValueError("camera path values must be finite and scale > 0")

    @classmethod
    def identity(cls, frame_count: int) -> "CameraPath":
        return cls(np.ones(frame_count), np.zeros(frame_count), np.zeros(frame_count), np.zeros(frame_count))

    @property
    def frame_count(self) -> int:
        return len(self.scale)

    @property
    def is_identity(self) -> bool:
        return bool(
            np.all(self.scale == 1) and not np.any(self.dx) and not np.any(self.dy) and not np.any(self.rotation)
        )

    def as_lists(self) -> dict[str, list[float]]:
        """Plain lists (for a job record or JSON)."""
        return {
            "scale": self.scale.tolist(),
            "dx": self.dx.tolist(),
            "dy": self.dy.tolist(),
            "rotation": self.rotation.tolist(),
        }


def camera_path(move: CameraMove, frame_count: int) -> CameraPath:
    """The eased, Kalman-smoothed camera path for ``move`` over a clip of ``frame_count`` frames.

    Each move covers its whole amount (set by its speed) over the whole clip, all moves at once. The
    path is centred: offsets and roll swing symmetrically about the frame's centre and the smallest
    zoom is 1, which keeps the crop that hides the borders as small as the path allows. A static move
    gives the identity path.
    """
    if isinstance(frame_count, bool) or not isinstance(frame_count, int) or frame_count < 1:
        raise ValueError(f"frame_count must be an int >= 1, got {frame_count!r}")
    if move.is_static or frame_count == 1:
        return CameraPath.identity(frame_count)

    # 1. Ease in and out: zero speed at both ends, the fastest mid-clip.
    t = np.linspace(0.0, 1.0, frame_count)
    progress = (1.0 - np.cos(np.pi * t)) / 2.0

    # 2. Sum the moves' end poses: log zoom, offsets as fractions of the frame, roll in degrees.
    log_zoom = dx = dy = roll = 0.0
    for m in move.moves:
        sign = 1.0 if m.direction in ("in", "right", "down", "clockwise") else -1.0
        if m.kind in ("zoom", "dolly"):
            log_zoom += sign * math.log(_ZOOM_FACTOR[m.speed])
        elif m.kind == "pan":
            dx += sign * _SHIFT[m.speed]
        elif m.kind == "tilt":
            dy += sign * _SHIFT[m.speed]
        elif m.kind == "roll":
            roll += sign * _ROLL_DEG[m.speed]
        else:  # orbit: the camera swings sideways and banks into the turn
            dx += sign * _ORBIT_SHIFT[m.speed]
            roll += sign * _ORBIT_ROLL_DEG[m.speed]
    series = np.outer(progress, [log_zoom, dx, dy, roll])

    # 3. Smooth with the constant-velocity Kalman/RTS smoother, as the original design does. The camera
    #    rests before and after the clip, so the smoother keeps both ends still instead of overshooting.
    rest = _REST_FRAMES
    padded = np.concatenate([np.repeat(series[:1], rest, axis=0), series, np.repeat(series[-1:], rest, axis=0)])
    series = smooth_constant_velocity(padded, PATH_SMOOTHING)[rest:-rest]

    # 4. Centre: symmetric offsets and roll, smallest zoom 1.
    centred = series - (series.max(axis=0) + series.min(axis=0)) / 2.0
    centred[:, 0] = series[:, 0] - series[:, 0].min()
    return CameraPath(np.exp(centred[:, 0]), centred[:, 1], centred[:, 2], centred[:, 3])


# --- warping -------------------------------------------------------------------------------------


def _path_views(path: CameraPath, width: int, height: int) -> tuple[Floats, Floats]:
    """Per-frame linear part (n, 2, 2) and offset (n, 2) mapping centred output to centred source pixels."""
    angle = np.deg2rad(path.rotation)
    cos, sin = np.cos(angle) / path.scale, np.sin(angle) / path.scale
    # y points down, so this matrix turns the view clockwise on screen for a positive angle.
    linear = np.stack([np.stack([cos, -sin], axis=-1), np.stack([sin, cos], axis=-1)], axis=-2)
    offset = np.stack([path.dx * width, path.dy * height], axis=-1)
    return linear, offset


def fit_zoom(linear: Floats, offset: Floats, width: int, height: int) -> float:
    """Smallest zoom >= 1 for which every view keeps all output pixels inside the source frame.

    A view maps a centred output pixel ``u`` to the centred source point ``offset + linear @ u / zoom``.
    Returns ``inf`` when an offset alone already leaves the frame (no zoom can help).
    """
    half = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]) * half
    reach = np.einsum("kij,cj->kci", linear, corners)  # (n, 4, 2)
    room = half - EDGE_SAFETY_PX
    room_high = (room - offset)[:, None, :]  # space to the right/bottom edge
    room_low = (room + offset)[:, None, :]  # space to the left/top edge
    if np.any(room_high <= 0) or np.any(room_low <= 0):
        return math.inf
    needed = np.where(reach > 0, reach / room_high, -reach / room_low)
    return max(1.0, float(needed.max()))


def warp_views(frames: Frames, linear: Floats, offset: Floats, zoom: float) -> Frames:
    """Warp each frame by its view (see :func:`fit_zoom`) with one extra ``zoom``; bilinear, same shape."""
    _, height, width, _ = frames.shape
    matrices = view_matrices_from(linear, offset, zoom, width, height)
    out = np.empty_like(frames)
    for k, frame in enumerate(frames):
        # BORDER_REFLECT is only a safety net: fit_zoom keeps every sample inside the frame.
        out[k] = cv2.warpAffine(
            frame,
            matrices[k],
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
    return out


def view_matrices_from(linear: Floats, offset: Floats, zoom: float, width: int, height: int) -> Floats:
    """(n, 2, 3) affine matrices taking output pixel coordinates to source pixel coordinates."""
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    scaled = linear / zoom
    shift = centre + offset - scaled @ centre
    result: Floats = np.concatenate([scaled, shift[:, :, None]], axis=2)
    return result


def crop_zoom(path: CameraPath, width: int, height: int) -> float:
    """The constant extra zoom that :func:`apply_camera` uses so that no border shows (1 for identity)."""
    _check_size(width, height)
    if path.is_identity:
        return 1.0
    zoom = fit_zoom(*_path_views(path, width, height), width, height)
    if not math.isfinite(zoom):
        raise ValueError("camera path moves the view centre out of the frame")
    return zoom


def view_matrices(path: CameraPath, width: int, height: int) -> Floats:
    """(n, 2, 3) matrices, output pixel -> source pixel, exactly as :func:`apply_camera` warps."""
    linear, offset = _path_views(path, width, height)
    return view_matrices_from(linear, offset, crop_zoom(path, width, height), width, height)


def apply_camera(frames: Frames, path: CameraPath) -> Frames:
    """Frames warped along ``path`` and cropped so that no border shows; same shape and dtype.

    The identity path returns an exact copy. Otherwise each output pixel is a bilinear sample from
    inside its own source frame (see :data:`EDGE_SAFETY_PX`).
    """
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be uint8 (n, H, W, 3), got {getattr(frames, 'shape', type(frames))}")
    n, height, width, _ = frames.shape
    if n != path.frame_count:
        raise ValueError(f"{n} frames but the camera path has {path.frame_count}")
    _check_size(width, height)
    if path.is_identity:
        return frames.copy()
    linear, offset = _path_views(path, width, height)
    return warp_views(frames, linear, offset, crop_zoom(path, width, height))


def _check_size(width: int, height: int) -> None:
    if width < 4 or height < 4:
        raise ValueError(f"frames must be at least 4x4 pixels, got {width}x{height}")
