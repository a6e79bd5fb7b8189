"""Naive numpy references for the kernels (the stumpy habit): slow, obvious, ±1 arithmetic."""
import numpy as np


def conv_pads(h, w, kh, kw, stride, padding):
    sy, sx = stride
    if padding == "valid":
        return (0, 0, 0, 0)
    ho, wo = -(-h // sy), -(-w // sx)
    th = max((ho - 1) * sy + kh - h, 0)
    tw = max((wo - 1) * sx + kw - w, 0)
    return (th // 2, th - th // 2, tw // 2, tw - tw // 2)


def gemm(x, w):
    """x (N, K) ±1, w (M, K) ±1 -> int64 (N, M)."""
    return x.astype(np.int64) @ w.astype(np.int64).T


def conv2d(x, w, stride, padding, pad_value):
    """x (N, H, W, C) ±1 or real, w (F, kh, kw, C) ±1; pad_value 0 means real zeros."""
    n, h, wd, c = x.shape
    f, kh, kw, _ = w.shape
    pt, pb, pl, pr = conv_pads(h, wd, kh, kw, stride, padding)
    xp = np.full((n, h + pt + pb, wd + pl + pr, c), pad_value, dtype=np.float64)
    xp[:, pt:pt + h, pl:pl + wd] = x
    ho = (h + pt + pb - kh) // stride[0] + 1
    wo = (wd + pl + pr - kw) // stride[1] + 1
    out = np.zeros((n, ho, wo, f), np.float64)
    for y in range(ho):
        for z in range(wo):
            patch = xp[:, y * stride[0]:y * stride[0] + kh, z * stride[1]:z * stride[1] + kw]
            out[:, y, z] = patch.reshape(n, kh * kw * c) @ w.reshape(f, -1).T.astype(np.float64)
    return out


def maxpool(x, size, stride, min_channels=None):
    n, h, w, c = x.shape
    ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
    out = np.empty((n, ho, wo, c), x.dtype)
    for y in range(ho):
        for z in range(wo):
            win = x[:, y * stride:y * stride + size, z * stride:z * stride + size]
            mx, mn = win.max(axis=(1, 2)), win.min(axis=(1, 2))
            out[:, y, z] = mx if min_channels is None else np.where(min_channels, mn, mx)
    return out


def sign(x):
    return np.where(np.asarray(x) >= 0, 1, -1).astype(np.int8)
