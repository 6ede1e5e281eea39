"""Print the blocks and shortcuts of docs/tutorial.md from the model code: python docs/print_blocks.py"""

import inspect

from resnetlab.models import BasicBlock, ZeroPadShortcut, count_parameters, create_model


def show(title: str, module) -> None:
    print(f"## {title} ({count_parameters(module):,} parameters)\n{module}\n")


print(f"## BasicBlock.forward: H(x) = F(x) + x\n{inspect.getsource(BasicBlock.forward)}")
print(f"## ZeroPadShortcut.forward: option A\n{inspect.getsource(ZeroPadShortcut.forward)}")
resnet20 = create_model("resnet20", num_classes=10, in_channels=3)
show('create_model("resnet20").layer1[0]: basic block, identity shortcut', resnet20.layer1[0])
show('create_model("resnet20").layer2[0]: basic block, shortcut option A (zero padding)', resnet20.layer2[0])
show(
    'create_model("resnet20", shortcut="B").layer2[0]: basic block, shortcut option B (projection)',
    create_model("resnet20", num_classes=10, in_channels=3, shortcut="B").layer2[0],
)
show('create_model("plain20").layer2[0]: the same block without a shortcut', create_model("plain20").layer2[0])
show('create_model("resnet50").layer1[0]: bottleneck block, projection shortcut', create_model("resnet50").layer1[0])
show('create_model("resnet50").layer1[1]: bottleneck block, identity shortcut', create_model("resnet50").layer1[1])
for name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "plain20", "plain56"):
    print(f"{name}: {count_parameters(create_model(name, num_classes=10, in_channels=3)) / 1e6:.2f}M parameters")
