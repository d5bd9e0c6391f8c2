"""A seeded 3-D macula simulator for CTT-Net: two OCT B-scans per eye, pre- and post-operative acuity.

CTT-Net (Wang et al., IEEE BIBM 2022, arXiv 2212.05794; reference code
github.com/wjh892521292/Cataract_OCT) predicts the visual acuity (VA) after cataract surgery from a
horizontal and a vertical OCT B-scan through the fovea plus the pre-operative VA. No OCT data ships
offline, so this module simulates eyes whose physical story is fixed before any model is compared:

1. **One 3-D macula per eye.** Coordinates x (temporal -> nasal, every eye shown as a right eye) and
   y (inferior -> superior) in mm, centred on the fovea; depth z in pixels of a window
   `DEPTH_UM` deep. Thirteen surfaces z_k(x, y) bound the layers of the IN*OCT consensus
   nomenclature (Staurenghi et al., Ophthalmology 2014): RNFL, GCL, IPL, INL, OPL, ONL, ELM,
   myoid zone, ellipsoid zone (EZ), outer segments / interdigitation zone, RPE-Bruch complex,
   choroid, sclera. Per-eye thickness scales, tilt, curvature and depth offset vary.
   The foveal pit is a Gaussian thinning of the inner layers to ~0 (sigma 0.5-0.7 mm; Gaussian and
   difference-of-Gaussians pit models: Dubis, McAllister & Carroll, Br J Ophthalmol 2009); the ONL
   and the outer segments thicken there; the RNFL thickens nasally (towards the disc).
2. **Two views = two slices of that macula.** The horizontal scan samples (x = s, y = 0), the
   vertical one (x = 0, y = s), s in [-scan_mm/2, scan_mm/2]. Only the speckle and the noise floor
   are drawn per view.
3. **Lesions are 3-D objects** at (x0, y0) with a lateral radius R (`KINDS`): intraretinal cysts,
   drusen, subretinal fluid, an epiretinal membrane, an EZ disruption and a macular hole. A lesion
   shows in a scan only where the scan line cuts its footprint, i.e. in the horizontal scan iff
   |y0| < R and in the vertical one iff |x0| < R. With `visibility="mixed"` parafoveal lesions lie
   near one of the two meridians (a design choice, not anatomy: it makes most lesions one-view, the
   regime a two-view model is about); `"both"` moves every lesion so both lines cut it.
4. **VA from anatomy.** The visual potential (post-operative logMAR) is a healthy baseline plus,
   per lesion, severity(kind) x size x exp(-r^2 / 2 sigma_f^2) (r: the lesion's distance from the
   fovea), so a model has to see a lesion, in whichever view shows it, to predict its damage.
5. **Cataract.** Density c ~ Beta per eye; its VA limit grows with c. Pre-operative logMAR combines
   potential and cataract limit so that the worse one dominates (their minimum angles of
   resolution add: log10(10^potential + 10^limit), a smooth maximum) + test-retest noise
   (`pre_va="uninformative"`: the potential inside that maximum belongs to another, random eye, so
   pre-op VA keeps its marginal but says nothing about this macula). Surgery removes the cataract:
   post-op = potential + its own noise.
6. **Imaging.** Layer reflectivities in dB (bright RNFL, IPL, OPL, EZ, RPE; dark INL, ONL), Beer-Lambert
   attenuation proportional to scattering (so bright lesions shadow what lies below; Vermeer et al.,
   Biomed Opt Express 2014), a depth roll-off, lateral blur and signal loss growing with
   c x cataract_snr (cataract degrades OCT signal strength: van Velthoven et al., Br J Ophthalmol
   2006), multiplicative gamma speckle (Schmitt, Xiang & Yung, J Biomed Opt 1999), an exponential
   noise floor and log compression to [0, 1] over a fixed dB window.

Calibration target (Yang et al., Curr Eye Res 2025, a cataract cohort): pre-op logMAR 0.60 +- 0.39,
post-op 0.14 +- 0.18; the defaults land within +-0.05 of the means and +-0.07 of the sds
(tests/systems/ctt_net/test_ctt_simulator.py checks it on 3,000 eyes).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np

from frugal.scripts.configs import knob
from frugal.scripts.systems.ctt_net.eye_data import EyeSet, decimal_to_logmar, logmar_to_decimal

# ---------------------------------------------------------------------------------------------------
# Anatomy
# ---------------------------------------------------------------------------------------------------

DEPTH_UM = 1000.0  # depth of the B-scan window (the image's height spans this)
BM_DEPTH_UM = 620.0  # mean depth of Bruch's membrane at the fovea before tilt/curvature/offset

SURFACES = (
    "ILM",
    "RNFL|GCL",
    "GCL|IPL",
    "IPL|INL",
    "INL|OPL",
    "OPL|ONL",
    "ELM",
    "ELM|IS",
    "EZ top",
    "EZ|OS",
    "RPE top",
    "BM",
    "choroid|sclera",
)
S = {name: k for k, name in enumerate(SURFACES)}  # surface index by name

# Layers between consecutive surfaces (layer k lies between surface k and k+1), with a typical
# parafoveal thickness (um) and an OCT reflectivity (dB relative to the RPE).
LAYERS = (
    # name, thickness um (None: computed), reflectivity dB
    ("RNFL", None, -3.0),
    ("GCL", 48.0, -13.0),
    ("IPL", 38.0, -8.0),
    ("INL", 34.0, -17.0),
    ("OPL", 28.0, -9.0),
    ("ONL", 70.0, -21.0),
    ("ELM", 5.0, -11.0),
    ("IS", 24.0, -17.0),
    ("EZ", 12.0, -4.0),
    ("OS/IZ", 30.0, -12.0),
    ("RPE", 22.0, 0.0),
    ("choroid", 230.0, -9.0),
    ("sclera", None, -16.0),  # below the last surface
)
INNER_LAYERS = 5  # RNFL..OPL thin to ~0 in the foveal pit

NOISE_FLOOR_DB = -31.0  # mean of the exponential noise floor
DISPLAY_DB = (-30.0, 1.0)  # log compression window mapped to [0, 1]
SPECKLE_SHAPE = 3.0  # gamma shape of the intensity speckle (1: one fully developed speckle look)
MU_TISSUE = 1.0  # attenuation (1/mm) of any tissue below the ILM
MU_PER_REFLECTIVITY = 3.0  # extra attenuation (1/mm) per unit linear reflectivity
ROLLOFF_DB_PER_MM = 3.0  # SD-OCT sensitivity roll-off with depth
AXIAL_PSF_UM = 5.0  # axial resolution (Gaussian sigma)
LATERAL_PSF_MM = 0.012  # lateral resolution without cataract (Gaussian sigma)
CATARACT_BLUR_MM = 0.05  # extra lateral blur sigma at c x cataract_snr = 1
CATARACT_LOSS_DB = 9.0  # signal loss at c x cataract_snr = 1
CHOROID_WAVES = 6  # random 3-D sinusoids forming the choroid's vessel texture


def _db(value):
    return 0.0 if value is None else 10.0 ** (value / 10.0)


# linear reflectivity of the vitreous (no scatterers: only the noise floor shows) and of the 13 layers
LAYER_REFLECTIVITY = np.asarray([0.0] + [_db(db) for _, _, db in LAYERS], np.float32)


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """Per-eye shape parameters of a healthy macula (all arrays have n rows).

    thickness_scale (n, 12): multiplies each layer's base thickness; pit_sigma (mm) and pit_depth
    (fraction of the inner layers removed at the fovea); onl_bump (um of extra ONL at the fovea);
    rnfl_nasal (um of extra RNFL towards the disc); tilt_x, tilt_y (um of depth per mm);
    curvature (um per mm^2: the fundus bowl raises the scan's ends); offset (um: where the device's
    crop put Bruch's membrane); choroid_waves (n, J, 3) wave vectors (rad/mm in x, y; rad/um in depth)
    and choroid_phase (n, J) of the choroid's vessel texture.
    """

    thickness_scale: np.ndarray
    pit_sigma: np.ndarray
    pit_depth: np.ndarray
    onl_bump: np.ndarray
    rnfl_nasal: np.ndarray
    tilt_x: np.ndarray
    tilt_y: np.ndarray
    curvature: np.ndarray
    offset: np.ndarray
    choroid_waves: np.ndarray
    choroid_phase: np.ndarray

    def __len__(self) -> int:
        return len(self.pit_sigma)

    def subset(self, index) -> Anatomy:
        return Anatomy(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


def sample_anatomy(rng: np.random.Generator, n: int) -> Anatomy:
    """n healthy maculae with population variation (tilt and offset include the device's crop)."""
    layer_sd = np.full(len(LAYERS) - 1, 0.07)
    layer_sd[[name for name, _, _ in LAYERS].index("choroid")] = 0.25  # choroids vary most
    global_scale = rng.normal(1.0, 0.05, (n, 1))
    scale = global_scale * np.exp(rng.normal(0.0, 1.0, (n, len(LAYERS) - 1)) * layer_sd)
    waves = np.stack(
        [
            rng.normal(0.0, 6.0, (n, CHOROID_WAVES)),  # rad/mm laterally (vessel spacing ~0.5-1 mm)
            rng.normal(0.0, 6.0, (n, CHOROID_WAVES)),
            rng.normal(0.0, 0.05, (n, CHOROID_WAVES)),  # rad/um in depth
        ],
        axis=-1,
    )
    return Anatomy(
        thickness_scale=scale.astype(np.float32),
        pit_sigma=rng.uniform(0.5, 0.7, n).astype(np.float32),
        pit_depth=rng.uniform(0.92, 1.0, n).astype(np.float32),
        onl_bump=rng.normal(40.0, 8.0, n).clip(10.0, None).astype(np.float32),
        rnfl_nasal=rng.normal(32.0, 6.0, n).clip(10.0, None).astype(np.float32),
        tilt_x=rng.normal(0.0, 18.0, n).astype(np.float32),
        tilt_y=rng.normal(0.0, 12.0, n).astype(np.float32),
        curvature=rng.normal(7.0, 3.0, n).clip(0.0, None).astype(np.float32),
        offset=rng.normal(0.0, 35.0, n).astype(np.float32),
        choroid_waves=waves.astype(np.float32),
        choroid_phase=rng.uniform(0.0, 2 * np.pi, (n, CHOROID_WAVES)).astype(np.float32),
    )


_FIXED_TEXTURE = sample_anatomy(np.random.default_rng(20220), 1)  # the choroid of `mean_anatomy`


def mean_anatomy(n: int = 1) -> Anatomy:
    """n copies of the population's average macula (no tilt, no offset): a fixed eye for tests."""
    return Anatomy(
        thickness_scale=np.ones((n, len(LAYERS) - 1), np.float32),
        pit_sigma=np.full(n, 0.6, np.float32),
        pit_depth=np.full(n, 0.96, np.float32),
        onl_bump=np.full(n, 40.0, np.float32),
        rnfl_nasal=np.full(n, 32.0, np.float32),
        tilt_x=np.zeros(n, np.float32),
        tilt_y=np.zeros(n, np.float32),
        curvature=np.full(n, 7.0, np.float32),
        offset=np.zeros(n, np.float32),
        choroid_waves=np.repeat(_FIXED_TEXTURE.choroid_waves, n, axis=0),
        choroid_phase=np.repeat(_FIXED_TEXTURE.choroid_phase, n, axis=0),
    )


def layer_thickness_um(anatomy: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, 12, P) thickness in um of every layer above the sclera at the P points (x, y) mm."""
    x = np.asarray(x, np.float32)[None, :]
    y = np.asarray(y, np.float32)[None, :]
    r2 = x * x + y * y
    r = np.sqrt(r2)
    col = lambda a: np.asarray(a, np.float32)[:, None]
    base = np.empty((len(anatomy), len(LAYERS) - 1, x.shape[1]), np.float32)
    for k, (name, um, _) in enumerate(LAYERS[:-1]):
        if name == "RNFL":
            nasal = col(anatomy.rnfl_nasal) / (1.0 + np.exp(-(x - 1.0) / 0.6))
            base[:, k] = 10.0 + nasal + 2.5 * y * y
        elif name == "GCL":
            base[:, k] = um * (1.0 - 0.07 * np.maximum(r - 1.5, 0.0))
        elif name == "ONL":
            base[:, k] = um + col(anatomy.onl_bump) * np.exp(-r2 / (2 * 0.5**2))
        elif name == "OS/IZ":
            base[:, k] = um + 10.0 * np.exp(-r2 / (2 * 0.4**2))
        else:
            base[:, k] = um
    pit = col(anatomy.pit_depth) * np.exp(-r2 / (2 * col(anatomy.pit_sigma) ** 2))
    base[:, :INNER_LAYERS] *= (1.0 - pit)[:, None, :]
    return base * anatomy.thickness_scale[:, :, None]


def layer_surfaces(anatomy: Anatomy, x: np.ndarray, y: np.ndarray, height: int) -> np.ndarray:
    """(n, 13, P) depth in pixels of every surface (`SURFACES`) at the P points (x, y) mm.

    Built upward and downward from Bruch's membrane, whose depth carries the eye's tilt, the fundus
    curvature (ends of a scan sit higher) and the device's crop offset.
    """
    thickness = layer_thickness_um(anatomy, x, y)
    x = np.asarray(x, np.float32)[None, :]
    y = np.asarray(y, np.float32)[None, :]
    col = lambda a: np.asarray(a, np.float32)[:, None]
    bm = (
        BM_DEPTH_UM
        + col(anatomy.offset)
        + col(anatomy.tilt_x) * x
        + col(anatomy.tilt_y) * y
        - col(anatomy.curvature) * (x * x + y * y)
    )
    bm_index = S["BM"]
    above = thickness[:, :bm_index]  # layers RNFL..RPE, top to bottom
    depth_above = np.cumsum(above[:, ::-1], axis=1)[:, ::-1]  # distance from surface k down to BM
    surfaces = np.empty((len(anatomy), len(SURFACES), x.shape[1]), np.float32)
    surfaces[:, :bm_index] = bm[:, None, :] - depth_above
    surfaces[:, bm_index] = bm
    surfaces[:, bm_index + 1] = bm + thickness[:, bm_index]
    return surfaces * (height / DEPTH_UM)


# ---------------------------------------------------------------------------------------------------
# Lesions
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LesionKind:
    """One lesion type: how often it occurs, its size ranges, and how it damages vision.

    radius_mm, height_um: uniform ranges of the lateral radius R and of the height h (the dome's
    elevation or the thickening it causes). damage = severity x (h / height_ref) x (R / radius_ref)
    x exp(-r^2 / 2 sigma_f^2) logMAR; a kind with height_ref=None scales with R only. central: the
    probability that the lesion sits within 0.3 mm of the fovea (macular holes: always at it).
    """

    name: str
    frequency: float
    radius_mm: tuple[float, float]
    height_um: tuple[float, float]
    severity: float
    radius_ref: float
    height_ref: float | None
    central: float


KINDS = (
    LesionKind("cyst", 0.22, (0.15, 0.45), (40.0, 160.0), 0.22, 0.3, 100.0, 0.10),
    LesionKind("drusen", 0.32, (0.15, 0.50), (20.0, 90.0), 0.09, 0.3, 50.0, 0.05),
    LesionKind("subretinal_fluid", 0.12, (0.30, 0.90), (30.0, 150.0), 0.19, 0.5, 80.0, 0.15),
    LesionKind("erm", 0.08, (0.90, 2.20), (20.0, 90.0), 0.11, 1.5, 50.0, 1.0),
    LesionKind("ez_disruption", 0.24, (0.10, 0.50), (0.0, 0.0), 0.30, 0.3, None, 0.05),
    LesionKind("macular_hole", 0.015, (0.10, 0.30), (50.0, 130.0), 0.45, 0.2, None, 1.0),
)
KIND = {k.name: i for i, k in enumerate(KINDS)}
MAX_LESIONS = 8  # lesion slots per eye (a Poisson count above it is cut)
FOVEAL_SIGMA_MM = 0.8  # sigma_f of the foveal weight of damage
NEAR_MERIDIAN_SD_RAD = 0.2  # angular spread of parafoveal lesions around the nearest meridian
OFF_MERIDIAN_SHARE = 0.15  # share of parafoveal lesions at a uniformly random angle
CYST_FILL = 5.0 / 6.0  # share of a cyst's lift that is fluid (the rest: a roof of OPL tissue)
ERM_WRINKLE = 0.2  # wrinkle amplitude as a share of the ERM's thickening


@dataclasses.dataclass(frozen=True)
class Lesions:
    """Per-eye lesion table with MAX_LESIONS slots; kind = -1 marks an empty slot. All (n, L).

    x0, y0, radius in mm; height in um (dome height / thickening / hole-rim elevation); membrane
    (ERM: membrane thickness um); wave (ERM wrinkles: wave vector kx, ky in rad/mm and phase, (n, L, 3)).
    """

    kind: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    radius: np.ndarray
    height: np.ndarray
    membrane: np.ndarray
    wave: np.ndarray

    @classmethod
    def empty(cls, n: int, slots: int = MAX_LESIONS) -> Lesions:
        z = np.zeros((n, slots), np.float32)
        return cls(
            np.full((n, slots), -1, np.int8),
            z.copy(),
            z.copy(),
            z.copy(),
            z.copy(),
            z.copy(),
            np.zeros((n, slots, 3), np.float32),
        )

    @classmethod
    def single(cls, kind: str, x0: float, y0: float, radius: float, height: float = 80.0, n: int = 1) -> Lesions:
        """n eyes with one lesion of `kind` at (x0, y0) mm (ERM: 15 um membrane, gentle wrinkles)."""
        if kind not in KIND:
            raise ValueError(f"kind={kind!r}: choose from {list(KIND)}")
        les = cls.empty(n, 1)
        les.kind[:] = KIND[kind]
        les.x0[:], les.y0[:], les.radius[:], les.height[:] = x0, y0, radius, height
        les.membrane[:] = 15.0
        les.wave[:] = (12.0, 4.0, 0.0)
        return les

    @property
    def present(self) -> np.ndarray:
        return self.kind >= 0

    def subset(self, index) -> Lesions:
        return Lesions(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


def sample_lesions(
    rng: np.random.Generator,
    n: int,
    lesion_rate: float,
    visibility: str = "mixed",
    width: int = 128,
    scan_mm: float = 6.0,
) -> Lesions:
    """Poisson(lesion_rate) lesions per eye (at most MAX_LESIONS, one macular hole at most).

    Central lesions (ERMs, macular holes, a kind's `central` share) sit within 0.3 mm of the fovea;
    the others at r = 0.35 + Gamma(2, 0.4) mm, at an angle near the nearest meridian (sd
    NEAR_MERIDIAN_SD_RAD; a share OFF_MERIDIAN_SHARE anywhere). `visibility="both"` then moves
    each lesion that a line misses onto a diagonal at the largest distance where both lines cut it
    (a footprint narrower than half the column spacing, width < ~32 px, may still slip between).
    """
    les = Lesions.empty(n)
    count = np.minimum(rng.poisson(lesion_rate, n), MAX_LESIONS)
    present = np.arange(MAX_LESIONS)[None, :] < count[:, None]
    freq = np.asarray([k.frequency for k in KINDS])
    kind = rng.choice(len(KINDS), size=(n, MAX_LESIONS), p=freq / freq.sum())
    # one macular hole per eye; a second one becomes a cyst
    hole = (kind == KIND["macular_hole"]) & present
    extra_hole = hole & (np.cumsum(hole, axis=1) > 1)
    kind[extra_hole] = KIND["cyst"]
    u = rng.uniform(size=(n, MAX_LESIONS, 8))
    lo = np.asarray([k.radius_mm[0] for k in KINDS])[kind]
    hi = np.asarray([k.radius_mm[1] for k in KINDS])[kind]
    radius = lo + (hi - lo) * u[..., 0]
    lo = np.asarray([k.height_um[0] for k in KINDS])[kind]
    hi = np.asarray([k.height_um[1] for k in KINDS])[kind]
    height = lo + (hi - lo) * u[..., 1]
    central = u[..., 2] < np.asarray([k.central for k in KINDS])[kind]
    r_central = 0.3 * np.sqrt(u[..., 3])
    r_para = 0.35 + rng.gamma(2.0, 0.4, (n, MAX_LESIONS))
    axis = rng.integers(0, 4, (n, MAX_LESIONS)) * (np.pi / 2)
    near = axis + rng.normal(0.0, NEAR_MERIDIAN_SD_RAD, (n, MAX_LESIONS))
    anywhere = u[..., 4] * 2 * np.pi
    theta = np.where(central | (u[..., 5] < OFF_MERIDIAN_SHARE), anywhere, near)
    r = np.where(central, r_central, r_para)
    r = np.where(kind == KIND["macular_hole"], 0.0, r)
    x0, y0 = r * np.cos(theta), r * np.sin(theta)
    if visibility == "both":
        # onto the nearest diagonal, at the largest distance (<= r) where both lines cut the footprint
        s = _sample_points(width, scan_mm)
        diag = np.round((theta - np.pi / 4) / (np.pi / 2)) * (np.pi / 2) + np.pi / 4
        missed = ~(_cut(x0, y0, radius, s, "horizontal") & _cut(x0, y0, radius, s, "vertical"))
        for shrink in (0.9, 0.7, 0.5, 0.3, 0.1, 0.0):
            r_both = np.minimum(r, shrink * np.sqrt(2.0) * radius)
            x1, y1 = r_both * np.cos(diag), r_both * np.sin(diag)
            hit = _cut(x1, y1, radius, s, "horizontal") & _cut(x1, y1, radius, s, "vertical")
            move = missed & hit
            x0, y0 = np.where(move, x1, x0), np.where(move, y1, y0)
            missed &= ~hit
    les.kind[present] = kind[present]
    les.x0[present], les.y0[present] = x0[present], y0[present]
    les.radius[present], les.height[present] = radius[present], height[present]
    les.membrane[present] = (10.0 + 15.0 * u[..., 6])[present]
    wave_k = 2 * np.pi / rng.uniform(0.3, 0.7, (n, MAX_LESIONS))  # wrinkle wavelength 0.3-0.7 mm
    wave_dir = u[..., 7] * 2 * np.pi
    wave_phase = rng.uniform(0.0, 2 * np.pi, (n, MAX_LESIONS))
    wave = np.stack([wave_k * np.cos(wave_dir), wave_k * np.sin(wave_dir), wave_phase], axis=-1)
    les.wave[present] = wave[present]
    return les


def lesion_damage(lesions: Lesions, foveal_sigma_mm: float = FOVEAL_SIGMA_MM) -> np.ndarray:
    """(n, L) logMAR damage per lesion: severity x size x exp(-r^2 / 2 sigma_f^2); 0 in empty slots."""
    kind = np.maximum(lesions.kind, 0)
    severity = np.asarray([k.severity for k in KINDS])[kind]
    radius_ref = np.asarray([k.radius_ref for k in KINDS])[kind]
    height_ref = np.asarray([k.height_ref or 0.0 for k in KINDS])[kind]
    size = lesions.radius / radius_ref * np.where(height_ref > 0, lesions.height / np.maximum(height_ref, 1e-9), 1.0)
    r2 = lesions.x0**2 + lesions.y0**2
    weight = np.exp(-r2 / (2 * foveal_sigma_mm**2))
    return np.where(lesions.present, severity * size * weight, 0.0).astype(np.float32)


def _sample_points(width: int, scan_mm: float) -> np.ndarray:
    """Lateral positions (mm) of the scan's pixel columns."""
    return (((np.arange(width) + 0.5) / width - 0.5) * scan_mm).astype(np.float32)


def scan_coordinates(meridian: str, width: int, scan_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) mm of the columns of the horizontal (y = 0) or vertical (x = 0) scan."""
    s = _sample_points(width, scan_mm)
    if meridian == "horizontal":
        return s, np.zeros_like(s)
    if meridian == "vertical":
        return np.zeros_like(s), s
    raise ValueError(f"meridian={meridian!r}: use 'horizontal' or 'vertical'")


def _cut(x0, y0, radius, s, meridian):
    """Whether the scan line's sampled columns s fall inside each footprint (x0, y0, radius)."""
    along, across = (x0, y0) if meridian == "horizontal" else (y0, x0)
    along, across, radius = (np.asarray(a)[..., None] for a in (along, across, radius))
    return np.any((s - along) ** 2 + across**2 < radius**2, axis=-1)


def cut_by(lesions: Lesions, meridian: str, width: int, scan_mm: float) -> np.ndarray:
    """(n, L) bool: the scan's line crosses the lesion's footprint at one of its pixel columns."""
    scan_coordinates(meridian, width, scan_mm)  # validates meridian
    return _cut(lesions.x0, lesions.y0, lesions.radius, _sample_points(width, scan_mm), meridian) & lesions.present


def lesion_profile(lesions: Lesions, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, L, P) ellipsoidal footprint sqrt(1 - d^2/R^2) (0 outside, and in empty slots) at (x, y)."""
    dx = np.asarray(x, np.float32)[None, None, :] - lesions.x0[..., None]
    dy = np.asarray(y, np.float32)[None, None, :] - lesions.y0[..., None]
    q = 1.0 - (dx * dx + dy * dy) / np.maximum(lesions.radius[..., None], 1e-6) ** 2
    return np.where(lesions.present[..., None], np.sqrt(np.clip(q, 0.0, None)), 0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Band:
    """Material painted over the layered tissue in some eyes: depth range [top, bottom) px per column."""

    rows: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    reflectivity: float
    attenuation: float  # 1/mm


def _apply_lesions(surfaces, lesions, x, y, um_to_px):
    """Deforms `surfaces` (n, 13, P) in place and returns the material bands of every lesion.

    Each lesion lifts the surfaces above its anchor by h x footprint (cysts, in the OPL / Henle fibre
    layer, lift the inner retina, subretinal fluid everything above the RPE, drusen everything above
    Bruch's membrane, an ERM thickens and wrinkles the inner retina; a macular hole lifts its rim).
    Bands are placed after every lift so stacked lesions stay consistent.
    """
    profile = lesion_profile(lesions, x, y)  # (n, L, P)
    kind = lesions.kind
    lifts = []  # (rows, slot, anchor surface, lift px (m, P))
    for slot in range(kind.shape[1]):
        a = profile[:, slot]
        rows = np.flatnonzero((kind[:, slot] >= 0) & (a.max(axis=1) > 0))
        for k in np.unique(kind[rows, slot]):
            sel = rows[kind[rows, slot] == k]
            a_sel, h = a[sel], lesions.height[sel, slot, None] * um_to_px
            name = KINDS[k].name
            if name == "cyst":
                lifts.append((sel, slot, S["OPL|ONL"], h * a_sel))
            elif name == "subretinal_fluid":
                lifts.append((sel, slot, S["RPE top"], h * a_sel))
            elif name == "drusen":
                lifts.append((sel, slot, S["BM"], h * a_sel))
            elif name == "erm":
                kx, ky, ph = (lesions.wave[sel, slot, i, None] for i in range(3))
                wrinkle = ERM_WRINKLE * np.sin(kx * np.asarray(x)[None] + ky * np.asarray(y)[None] + ph)
                lifts.append((sel, slot, S["OPL|ONL"], h * a_sel * (1.0 + wrinkle)))
            elif name == "macular_hole":
                radius = lesions.radius[sel, slot, None]
                dx = np.asarray(x)[None] - lesions.x0[sel, slot, None]
                dy = np.asarray(y)[None] - lesions.y0[sel, slot, None]
                r = np.sqrt(dx * dx + dy * dy)  # distance from the hole's centre
                rim = np.exp(-((r - radius) ** 2) / (2 * 0.15**2)) * (r >= radius)
                lifts.append((sel, slot, S["ELM"], h * rim))
    for sel, _, anchor, lift in lifts:
        surfaces[sel, :anchor] -= lift[:, None, :]
    bands = []
    for sel, slot, _, lift in lifts:
        name = KINDS[kind[sel[0], slot]].name
        if name == "cyst":  # under a roof of OPL tissue (a sixth of the lift)
            bottom = surfaces[sel, S["OPL|ONL"]]
            bands.append(_Band(sel, bottom - CYST_FILL * lift, bottom, 0.0, 0.1))
        elif name == "subretinal_fluid":
            bottom = surfaces[sel, S["RPE top"]]
            bands.append(_Band(sel, bottom - lift, bottom, 0.0, 0.1))
        elif name == "drusen":
            bottom = surfaces[sel, S["BM"]]
            bands.append(_Band(sel, bottom - lift, bottom, _db(-6.0), 8.0))
        elif name == "erm":
            top = surfaces[sel, S["ILM"]]
            a = profile[sel, slot]
            thick = lesions.membrane[sel, slot, None] * um_to_px * np.minimum(1.0, 4.0 * a)
            bands.append(_Band(sel, top - thick, top, _db(-1.0), 12.0))
    # gaps and holes are painted last: they remove whatever tissue lay there
    for slot in range(kind.shape[1]):
        a = profile[:, slot]
        for name, upper, lower in (("ez_disruption", "EZ top", "RPE top"), ("macular_hole", "ILM", "RPE top")):
            sel = np.flatnonzero((kind[:, slot] == KIND[name]) & (a.max(axis=1) > 0))
            if len(sel) == 0:
                continue
            inside = a[sel] > 0
            top = surfaces[sel, S[upper]]
            bottom = np.where(inside, surfaces[sel, S[lower]], top)
            refl, mu = (_db(-21.0), MU_TISSUE) if name == "ez_disruption" else (0.0, 0.0)
            bands.append(_Band(sel, top, bottom, refl, mu))
    return bands


def _coverage(z, top, bottom):
    """Fraction of pixel rows z..z+1 inside [top, bottom) per column: (m, H, P)."""
    return np.clip(np.minimum(bottom[:, None, :], z + 1.0) - np.maximum(top[:, None, :], z), 0.0, 1.0)


def reflectivity_map(
    anatomy: Anatomy, lesions: Lesions, meridian: str, height: int, width: int, scan_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free linear reflectivity and attenuation (1/mm) maps, each (n, height, width).

    The layers are anti-aliased (a pixel mixes the layers by the share of its depth each covers);
    the choroid's reflectivity is modulated by a 3-D vessel texture of the eye (the same field for
    both scans).
    """
    x, y = scan_coordinates(meridian, width, scan_mm)
    um_to_px = height / DEPTH_UM
    surfaces = layer_surfaces(anatomy, x, y, height)
    bands = _apply_lesions(surfaces, lesions, x, y, um_to_px)
    z = np.arange(height, dtype=np.float32)[None, :, None]
    below = lambda k: np.clip(z + 1.0 - surfaces[:, k, None, :], 0.0, 1.0)
    refl = np.full((len(anatomy), height, width), LAYER_REFLECTIVITY[0], np.float32)
    steps = np.diff(LAYER_REFLECTIVITY)
    for k in range(len(SURFACES)):
        refl += steps[k] * below(k)
    # choroid texture: 3-D sinusoids in (x, y, depth below BM), thresholded into vessel lumens
    bm = S["BM"]
    depth_um = (z - surfaces[:, bm, None, :]) / um_to_px
    phase = anatomy.choroid_phase[:, :, None, None]
    waves = anatomy.choroid_waves
    field = np.zeros_like(refl)
    for j in range(waves.shape[1]):
        kx, ky, kz = (waves[:, j, i, None, None] for i in range(3))
        field += np.sin(kx * x[None, None, :] + ky * y[None, None, :] + kz * depth_um + phase[:, j])
    texture = np.clip(0.6 + 0.5 * np.sqrt(2.0 / waves.shape[1]) * field, 0.1, 1.6)
    choroid = below(bm) - below(bm + 1)
    refl += LAYER_REFLECTIVITY[bm + 1] * (texture - 1.0) * choroid
    tissue = below(S["ILM"])
    mu = MU_TISSUE * tissue + MU_PER_REFLECTIVITY * refl
    for band in bands:
        cover = _coverage(z, band.top, band.bottom)
        refl[band.rows] += (band.reflectivity - refl[band.rows]) * cover
        mu_band = band.attenuation + MU_PER_REFLECTIVITY * band.reflectivity
        mu[band.rows] += (mu_band - mu[band.rows]) * cover
    return refl, mu


def _gaussian_kernel(sigma: float) -> np.ndarray:
    half = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-half, half + 1, dtype=np.float32)
    k = np.exp(-(t**2) / (2 * max(sigma, 1e-3) ** 2))
    return k / k.sum()


def render_bscan(
    anatomy: Anatomy,
    lesions: Lesions,
    meridian: str,
    *,
    height: int = 64,
    width: int = 128,
    scan_mm: float = 6.0,
    cataract: np.ndarray | float = 0.0,
    cataract_snr: float = 1.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(n, height, width) float32 B-scans in [0, 1] of n eyes along `meridian` through the fovea.

    Physical chain: reflectivity -> round-trip Beer-Lambert attenuation and depth roll-off ->
    axial PSF and lateral PSF (widened by the cataract's scatter) -> signal loss from the cataract
    -> multiplicative gamma speckle + exponential noise floor (only with `rng`; without it the
    noise-free expected intensity plus the mean floor) -> log compression over DISPLAY_DB.
    """
    refl, mu = reflectivity_map(anatomy, lesions, meridian, height, width, scan_mm)
    n = len(refl)
    dz_mm = DEPTH_UM / height / 1000.0
    optical_depth = np.cumsum(mu, axis=1) * dz_mm - 0.5 * mu * dz_mm
    z_mm = (np.arange(height, dtype=np.float32)[None, :, None] + 0.5) * dz_mm
    intensity = refl * np.exp(-2.0 * optical_depth) * 10.0 ** (-ROLLOFF_DB_PER_MM * z_mm / 10.0)
    # axial PSF: a fixed small kernel along depth
    kernel = _gaussian_kernel(AXIAL_PSF_UM / (DEPTH_UM / height))
    half = len(kernel) // 2
    padded = np.pad(intensity, ((0, 0), (half, half), (0, 0)), mode="edge")
    intensity = sum(w * padded[:, i : i + height] for i, w in enumerate(kernel))
    # lateral PSF per eye (Gaussian transfer function along the scan), widened by the cataract
    density = np.broadcast_to(np.asarray(cataract, np.float32), (n,))
    severity = density * np.float32(cataract_snr)
    sigma_px = (LATERAL_PSF_MM + CATARACT_BLUR_MM * severity) * width / scan_mm
    pad = max(8, int(np.ceil(4 * sigma_px.max())))
    wide = np.pad(intensity, ((0, 0), (0, 0), (pad, pad)), mode="edge")
    freq = np.fft.rfftfreq(wide.shape[-1]).astype(np.float32)
    transfer = np.exp(-2.0 * (np.pi * freq[None, :] * sigma_px[:, None]) ** 2)
    wide = np.fft.irfft(np.fft.rfft(wide, axis=-1) * transfer[:, None, :], n=wide.shape[-1], axis=-1)
    intensity = wide[..., pad : pad + width].astype(np.float32)
    intensity *= (10.0 ** (-CATARACT_LOSS_DB * severity / 10.0))[:, None, None].astype(np.float32)
    floor = np.float32(_db(NOISE_FLOOR_DB))
    if rng is None:
        signal = intensity + floor
    else:
        speckle = rng.standard_gamma(SPECKLE_SHAPE, intensity.shape, dtype=np.float32) / np.float32(SPECKLE_SHAPE)
        signal = intensity * speckle + floor * rng.standard_exponential(intensity.shape, dtype=np.float32)
    lo, hi = DISPLAY_DB
    image = (10.0 * np.log10(np.maximum(signal, 1e-12)) - lo) / (hi - lo)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# Acuity
# ---------------------------------------------------------------------------------------------------

HEALTHY_LOGMAR = 0.0  # visual potential of a macula without lesions (older pseudophakic eyes)
CATARACT_BETA = (1.0, 1.2)  # Beta(a, b) of the cataract density c
CATARACT_LIMIT = (-0.1, 2.0, 3.0)  # cataract-limited logMAR = l0 + l1 * c ** p (c = 1: counting fingers)


def cataract_limit_logmar(density) -> np.ndarray:
    """logMAR a lens of density c in [0, 1] allows on its own (grows with c)."""
    l0, l1, p = CATARACT_LIMIT
    return (l0 + l1 * np.asarray(density, np.float64) ** p).astype(np.float32)


def combined_logmar(potential, cataract_limit) -> np.ndarray:
    """Pre-operative logMAR of a macula behind a cataract: the two minimum angles of resolution add,
    log10(10^a + 10^b). The worse limit dominates (the result exceeds max(a, b) by at most
    log10(2) = 0.3, and by < 0.05 once they differ by 1), a smooth form of 'the worse of the two'."""
    a = np.asarray(potential, np.float64)
    b = np.asarray(cataract_limit, np.float64)
    return np.logaddexp(a * np.log(10.0), b * np.log(10.0)).astype(np.float32) / np.float32(np.log(10.0))


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """Settings of `simulate`: cohort size, image geometry, the two controls, and the VA model."""

    eyes: int = knob(2000, "number of eyes")
    height: int = knob(64, "B-scan depth in pixels")
    width: int = knob(128, "B-scan lateral pixels; the scan spans scan_mm")
    scan_mm: float = knob(6.0, "lateral extent of each B-scan (mm), centred on the fovea")
    visibility: Literal["mixed", "both"] = knob(
        "mixed", "mixed: most lesions are cut by one scan only; both (control): every lesion by both scans"
    )
    pre_va: Literal["informative", "uninformative"] = knob(
        "informative", "uninformative (control): pre-op VA independent of the macula"
    )
    lesion_rate: float = knob(1.3, "mean number of lesions per eye (Poisson)")
    label_noise: float = knob(0.08, "logMAR sd of VA measurement noise (chart test-retest ~0.07-0.1)")
    cataract_snr: float = knob(1.0, "strength of the cataract -> image SNR/blur coupling (0: none)")
    seed: int = knob(0, "random seed")

    def __post_init__(self):
        if not isinstance(self.eyes, int) or self.eyes < 1:
            raise ValueError(f"eyes={self.eyes!r} must be an integer >= 1")
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 16 <= value <= 4096:
                raise ValueError(f"{name}={value!r} must be an integer in [16, 4096] pixels")
        if not 0.5 <= self.scan_mm <= 12.0:
            raise ValueError(f"scan_mm={self.scan_mm!r} must be in [0.5, 12] mm")
        if self.visibility not in ("mixed", "both"):
            raise ValueError(f"visibility={self.visibility!r}: choose 'mixed' or 'both'")
        if self.pre_va not in ("informative", "uninformative"):
            raise ValueError(f"pre_va={self.pre_va!r}: choose 'informative' or 'uninformative'")
        if not 0.0 <= self.lesion_rate <= MAX_LESIONS:
            raise ValueError(f"lesion_rate={self.lesion_rate!r} must be in [0, {MAX_LESIONS}] lesions per eye")
        if not 0.0 <= self.label_noise <= 1.0:
            raise ValueError(f"label_noise={self.label_noise!r} must be in [0, 1] logMAR")
        if not 0.0 <= self.cataract_snr <= 5.0:
            raise ValueError(f"cataract_snr={self.cataract_snr!r} must be in [0, 5]")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an integer >= 0")


@dataclasses.dataclass(frozen=True)
class Cohort:
    """Everything `simulate` draws before rendering: anatomy, lesions, cataract and acuities."""

    anatomy: Anatomy
    lesions: Lesions
    cataract: np.ndarray
    truth: dict


def sample_cohort(config: SimulatorConfig) -> Cohort:
    """Draws the eyes and their acuities (no images; cheap). Independent random streams for
    anatomy, lesions, cataract and noise, so a control changes only what it names."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(5)]
    n = config.eyes
    anatomy = sample_anatomy(streams[0], n)
    lesions = sample_lesions(streams[1], n, config.lesion_rate, config.visibility, config.width, config.scan_mm)
    cataract = streams[2].beta(*CATARACT_BETA, n).astype(np.float32)
    labels = streams[3]
    damage = lesion_damage(lesions)
    potential = (HEALTHY_LOGMAR + damage.sum(axis=1)).astype(np.float32)
    macula = potential if config.pre_va == "informative" else potential[labels.permutation(n)]
    pre = combined_logmar(macula, cataract_limit_logmar(cataract)) + labels.normal(0.0, config.label_noise, n)
    post = potential + labels.normal(0.0, config.label_noise, n)
    # labels are decimal VA; the logMAR truths are the clipped values the labels carry
    pre_logmar = decimal_to_logmar(logmar_to_decimal(pre))
    post_logmar = decimal_to_logmar(logmar_to_decimal(post))
    h = cut_by(lesions, "horizontal", config.width, config.scan_mm)
    v = cut_by(lesions, "vertical", config.width, config.scan_mm)
    f32 = lambda a: np.asarray(a, np.float32)
    truth = {
        "cataract": cataract,
        "potential_logmar": potential,
        "pre_logmar": pre_logmar,
        "post_logmar": post_logmar,
        "damage_h_only": f32((damage * (h & ~v)).sum(axis=1)),
        "damage_v_only": f32((damage * (v & ~h)).sum(axis=1)),
        "damage_both": f32((damage * (h & v)).sum(axis=1)),
        "damage_hidden": f32((damage * (~h & ~v)).sum(axis=1)),
        "num_lesions": f32(lesions.present.sum(axis=1)),
    }
    return Cohort(anatomy, lesions, cataract, truth)


CHUNK = 250  # eyes rendered at once (bounds memory: ~10 float32 arrays of CHUNK x height x width)


def simulate(config: SimulatorConfig) -> EyeSet:
    """n simulated eyes: horizontal and vertical B-scans, decimal pre/post VA and the `truth` arrays
    (cataract, potential/pre/post logMAR, damage seen by H only / V only / both / neither, lesion
    count). Deterministic in `config.seed`."""
    cohort = sample_cohort(config)
    n = config.eyes
    speckle_seeds = np.random.SeedSequence(config.seed).spawn(5)[4].spawn((n + CHUNK - 1) // CHUNK)
    scans = {m: np.empty((n, config.height, config.width), np.float32) for m in ("horizontal", "vertical")}
    for c, start in enumerate(range(0, n, CHUNK)):
        rows = slice(start, min(start + CHUNK, n))
        rng = np.random.default_rng(speckle_seeds[c])
        anatomy, lesions = cohort.anatomy.subset(rows), cohort.lesions.subset(rows)
        for meridian, out in scans.items():
            out[rows] = render_bscan(
                anatomy,
                lesions,
                meridian,
                height=config.height,
                width=config.width,
                scan_mm=config.scan_mm,
                cataract=cohort.cataract[rows],
                cataract_snr=config.cataract_snr,
                rng=rng,
            )
    truth = cohort.truth
    return EyeSet(
        horizontal=scans["horizontal"],
        vertical=scans["vertical"],
        pre_va=logmar_to_decimal(truth["pre_logmar"]),
        post_va=logmar_to_decimal(truth["post_logmar"]),
        eye_ids=np.asarray([f"sim-{i:05d}" for i in range(n)]),
        folds=None,
        truth=truth,
        source=f"simulator(seed={config.seed}, visibility={config.visibility}, pre_va={config.pre_va})",
    )


def calibration(eyes: EyeSet) -> dict:
    """logMAR mean/sd of pre- and post-op VA (from the decimal labels) and the damage split by view."""
    pre, post = decimal_to_logmar(eyes.pre_va), decimal_to_logmar(eyes.post_va)
    out = {
        "pre_mean": float(pre.mean()),
        "pre_sd": float(pre.std()),
        "post_mean": float(post.mean()),
        "post_sd": float(post.std()),
        "corr_pre_post": float(np.corrcoef(pre, post)[0, 1]),
    }
    t = eyes.truth
    if "damage_both" in t:
        parts = {k: float(t[f"damage_{k}"].sum()) for k in ("h_only", "v_only", "both", "hidden")}
        total = sum(parts.values()) or 1.0
        out.update({f"share_{k}": v / total for k, v in parts.items()})
        out["share_one_view"] = out["share_h_only"] + out["share_v_only"]
    return out


def plot_examples(eyes: EyeSet, path, n: int = 4) -> Path:
    """A figure of n eyes (rows): horizontal and vertical scan with pre/post VA (decimal and logMAR)."""
    from frugal.scripts.report import new_figure, save_figure

    n = max(1, min(n, len(eyes)))
    fig, axes = new_figure(n, 2, figsize=(8, 2.0 * n), squeeze=False)
    for i in range(n):
        for j, (name, images) in enumerate((("horizontal", eyes.horizontal), ("vertical", eyes.vertical))):
            ax = axes[i, j]
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            title = f"{eyes.eye_ids[i]} {name}"
            if j == 0:
                pre, post = float(eyes.pre_va[i]), float(eyes.post_va[i])
                title += f"  pre {pre:.2f} ({-np.log10(pre):.2f})  post {post:.2f} ({-np.log10(post):.2f})"
            ax.set_title(title, fontsize=7)
    return save_figure(fig, path)
