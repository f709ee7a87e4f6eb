"""Issue 6 research probe (NOT RUN on a GPU yet): checks the one-call V-scale trick for an
int8/fp8 pool in the flex Triton kernel and times it against bf16 flex. Run on the device:
    PYTHONPATH=$PWD python docs/plans/issue6_probe.py        (DEV=cpu for the eager math path)
See docs/plans/issue6-quantized-pool.md; research code, not library code."""
import torch,sys,os
c=os.environ.get('DEV','cuda');sys.path.insert(0,'bench')
from torch.nn.attention.flex_attention import flex_attention as fa,AuxRequest as A
from raas_flex.masks import decode_block_mask as dbm
torch.manual_seed(0)
B,H,G,D,P,S=1,8,4,128,16,int(os.environ.get('S',512));N=S*P;L=min(128,S-1)
k=torch.randn(B,H,N,D,device=c);v=torch.randn(B,H,N,D,device=c)
k[...,::16]*=8  # outlier channels
q=torch.randn(B,H,G,D,device=c).bfloat16()
vis=torch.zeros(B,H,S,dtype=torch.int32,device=c);vis[...,:L]=P;vis[...,L-1]=5
m1=dbm(vis,P,G);m2=dbm(vis,P,2*G);sc=D**-.5
def qz(x,dt):
 s=x.abs().amax(-1)/(127. if dt==torch.int8 else 448.);y=x/s[...,None]
 return (y.round() if dt==torch.int8 else y).to(dt),s
def base(q,k,v):return fa(q,k,v,block_mask=m1,scale=sc)
def konly(q,kq,vq,ks,vt):
 return (fa(q,kq,vq,score_mod=lambda x,b,h,i,j:x*ks[b,h,j],block_mask=m1,scale=sc).float()*vt).bfloat16()
def trick(q,kq,vq,ks,lv):
 def sm(x,b,h,i,j):return x*ks[b,h,j]+torch.where(i<G,lv[b,h,j],0.)
 o,a=fa(torch.cat([q,q],2),kq,vq,score_mod=sm,block_mask=m2,scale=sc,return_aux=A(lse=True))
 l=a.lse;return (o[:,:,:G].float()*torch.exp(l[:,:,:G]-l[:,:,G:])[...,None]).bfloat16()
t=torch.arange(N,device=c);ok=(t%P)<vis[:,:,t//P]
def ref(kd,vd):
 s=(q.float()@kd.transpose(-1,-2))*sc
 return s.masked_fill(~ok[:,:,None],-1e30).softmax(-1)@vd
E=lambda a,b:f'{(a.float()-b).abs().max().item():.2e}'
cmp=c=='cuda'
if cmp:
 from decode_timing import graph_median_ms as T
 from torch._inductor.utils import run_and_get_code as rc
 base,konly,trick=[torch.compile(f,fullgraph=True) for f in(base,konly,trick)]
kb,vb=k.bfloat16(),v.bfloat16();R=ref(kb.float(),vb.float())
print(torch.__version__,'bf16 err',E(base(q,kb,vb),R),'us %.1f'%(T(lambda:base(q,kb,vb))*1e3) if cmp else '')
for dt in(torch.int8,torch.float8_e4m3fn):
 kq,ks=qz(k,dt);vq,vs=qz(v,dt);lv=vs.log();vt=vs.amax()
 Rq=ref(kq.float()*ks[...,None],vq.float()*vs[...,None])
 o=trick(q,kq,vq,ks,lv)
 print(dt,'trick: err vs dequant-ref',E(o,Rq),'vs bf16-ref',E(o,R))
 if cmp:
  _,code=rc(trick,q,kq,vq,ks,lv);cd='\n'.join(code)
  print(' pool-sized allocs',sum(f'{N}, {D}' in l and 'empty' in l for l in cd.splitlines()),'kernels',cd.count('.run('))
  print(' us trick %.1f'%(T(lambda:trick(q,kq,vq,ks,lv))*1e3),'konly %.1f'%(T(lambda:konly(q,kq,vq,ks,vt))*1e3))
