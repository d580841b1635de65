"""Quick latency table for README: python benchmarks/quick_latency.py (bundled model, ORT CPU, 2 threads).

Medians of 20 runs (10 for 12.6 MP) after 2 warm-up calls; decoded uint8 arrays in, arrays out.
The pytest-benchmark suite (benchmarks/test_latency.py) is the fuller version.
"""
import time, numpy as np, sdk, onnxruntime as ort
from PIL import Image
p = sdk.load(backend="onnxruntime-cpu", threads=2)
ex = Image.open(sdk.example_image())
def img(w, h, grey):
    return np.asarray(ex.convert("L" if grey else "RGB").resize((w, h), Image.BICUBIC))
sess = p.runner.session
def med(f, n=20):
    f(); f(); ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return 1000*np.median(ts), 1000*(np.percentile(ts,75)-np.percentile(ts,25))
rows = {
 "generator only 256x256 (ORT, 2 threads)": lambda: sess.run(None, {"luma": np.random.rand(1,1,256,256).astype(np.float32), "style": np.eye(5, dtype=np.float32)[:1]}),
 "colorize 1024x1024 grey": (lambda a=img(1024,1024,True): p.colorize(a)),
 "colorize 4096x3072 grey": (lambda a=img(4096,3072,True): p.colorize(a)),
 "stylize 512x512 colour": (lambda a=img(512,512,False): p.stylize(a, "ukiyoe")),
 "fuse laplacian 512x512": (lambda a=img(512,512,False): p.fuse(a, a[::-1])),
}
for k, f in rows.items():
    m, iqr = med(f, 10 if "4096" in k else 20)
    print(f"{k:45s} median {m:7.1f} ms  IQR {iqr:5.1f} ms")
