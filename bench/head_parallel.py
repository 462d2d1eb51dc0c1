"""Parallel HEAD throughput of the store, 1-16 threads, 400 distinct keys with metadata, on
$S3_ENDPOINT (bucket bench1, keys AK/SK). Usage: python bench/head_parallel.py"""
import os, time, s3mount as s3
from concurrent.futures import ThreadPoolExecutor
c=s3.S3Connection(access_key_id='AK',secret_access_key='SK',endpoint=os.environ['S3_ENDPOINT'],tls=False,region='us-east-1',default_bucket='bench1')
cl=s3.RemoteStore(c).client
N=400
for i in range(N): cl.put('bench1',f'p/f{i}',b'y'*100,{'x-amz-meta-a':'b'})
for w in (1,2,4,8,16,1,2,4,8,16):
    pool=ThreadPoolExecutor(w)
    list(pool.map(lambda i: cl.head('bench1',f'p/f{i}'), range(50)))
    t=time.perf_counter(); c0=time.process_time()
    list(pool.map(lambda i: cl.head('bench1',f'p/f{i}'), range(N)))
    dt=time.perf_counter()-t
    print(f'{w:2d} threads: {N/dt:.0f} HEAD/s, cpu/HEAD {(time.process_time()-c0)/N*1e6:.0f} us')
    pool.shutdown()
