"""The Winograd weight transform and a one-call F(4x4) conv2d, timed: run it
with PYTHONPATH at two builds to compare them (bench/RESULTS.md: ab.py).
python bench/winograd_pack_time.py LABEL"""
import numpy as np, time, fastconv, sys
from fastconv import _core
from fastconv._conv import conv2d_algorithm
fastconv.set_weight_cache(0) if hasattr(fastconv, "set_weight_cache") else None
def t(f,n=9):
    f(); ts=[]
    for _ in range(n):
        a=time.perf_counter(); f(); ts.append(time.perf_counter()-a)
    return sorted(ts)[n//2]*1e3
r=np.random.default_rng(0)
out=[]
for C in (128, 512):
    w=r.random((3,3,C,C)).astype(np.float32)
    a=t(lambda: _core.ConvOp(w,(0,1,2,3),1,None,(1,1),(1,1),False,True,False,1,False))
    b=t(lambda: _core.ConvOp(w,(0,1,2,3),1,None,(1,1),(1,1),False,False,True,1,False))
    x=r.random((1,14,14,C)).astype(np.float32)
    f4=t(lambda: conv2d_algorithm(x,w,padding=1,algorithm="winograd-f4x4-3x3",num_threads=1))
    out.append(f"C={C}: pack {a:.2f} F2 transform {b-a:.2f} one-call F4 14x14 {f4:.2f} ms")
print(sys.argv[1], " | ".join(out))
