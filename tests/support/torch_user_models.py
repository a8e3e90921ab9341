"""torch models as a user brings them to ``--model py:MODULE:FACTORY``: a small image
classifier returned as a bare ``torch.nn.Module``, and a small generator returned as a
spec made with ``ModelSpec.from_torch``."""

import torch

from jaxdissect.spec import ModelSpec


class SmallClassifier(torch.nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=4, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=4, padding=1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class SmallGenerator(torch.nn.Module):
    """z [b, 8] -> layer1 [b, 16, 4, 4] -> layer2 [b, 8, 8, 8] -> image [b, 3, 16, 16]."""

    def __init__(self):
        super().__init__()
        self.layer1 = torch.nn.Sequential(torch.nn.Linear(8, 16 * 16), torch.nn.ReLU(),
                                          torch.nn.Unflatten(1, (16, 4, 4)))
        self.layer2 = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2),
                                          torch.nn.Conv2d(16, 8, 3, padding=1),
                                          torch.nn.ReLU())
        self.output = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2),
                                          torch.nn.Conv2d(8, 3, 3, padding=1), torch.nn.Tanh())

    def forward(self, z):
        return self.output(self.layer2(self.layer1(z)))


def classifier():
    torch.manual_seed(0)
    return SmallClassifier()


def generator_module():
    torch.manual_seed(0)
    g = SmallGenerator().eval()
    with torch.no_grad():     # He-scaled weights: units that vary with z
        for m in g.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.normal_(0, (2.0 / m.weight[0].numel()) ** 0.5)
    return g


def generator():
    return ModelSpec.from_torch(generator_module(), kind="generator", z_dim=8,
                                layers={"layer2": "layer2"}, default_layer="layer2")
