"Launched by tests/test_distributed.py under torchrun: BatchNorm statistics recomputed on each rank's shard, then pooled"
import sys
import torch
from torch import nn
from flatnb.core import init_distributed, dist_info
from flatnb.swa import _pool_bn_across_ranks

init_distributed('gloo')
rank, world = dist_info()
torch.manual_seed(0)
x = torch.randn(8, 3, 5, 5) * torch.tensor([1., 2., 3.])[:, None, None] + torch.tensor([0., 1., -1.])[:, None, None]   # the union of the shards
bn = nn.BatchNorm2d(3)
shard = x.tensor_split(world)[rank]
bn.running_mean.copy_(shard.mean((0, 2, 3))); bn.running_var.copy_(shard.var((0, 2, 3), unbiased=False))
_pool_bn_across_ranks(bn)
torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)))
torch.testing.assert_close(bn.running_var, x.var((0, 2, 3), unbiased=False))
print(f'rank {rank}: pooled BatchNorm statistics equal those of the union')
torch.distributed.destroy_process_group()
