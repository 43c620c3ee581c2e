"""SimCLR + CLSP with lightly: lightly_simclr.py plus a store of synthetic positives and the CLSP term."""

import argparse

import clsp
import torch
import torchvision
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform, SimCLRViewTransform
from torch import nn


class SimCLR(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(512, 512, 128)

    def forward(self, x):
        x = self.backbone(x).flatten(start_dim=1)
        return self.projection_head(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="an image folder: one subfolder of images per class")
    parser.add_argument("--size", type=int, default=32, help="the crops' side in pixels")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default="simclr_backbone.pt", help="where the trained backbone's weights go")
    parser.add_argument("--positives", required=True, help="the store of --data's positives (clsp synthesize)")
    parser.add_argument("--clsp-weight", type=float, default=0.5, help="CLSP lambda (paper: 1.0; short runs from scratch collapse at 1.0)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    model = SimCLR(backbone)

    transform = SimCLRTransform(input_size=args.size, gaussian_blur=0.0)
    dataset = torchvision.datasets.ImageFolder(args.data, transform=transform)
    view = SimCLRViewTransform(input_size=args.size, gaussian_blur=0.0)  # one view: the synthetic positive's
    dataset = clsp.PositivesStore.open(args.positives, dataset, positive_transform=view)
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)

    criterion = NTXentLoss()
    clsp_term = clsp.CLSPTerm(weight=args.clsp_weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)

    losses = []
    for epoch in range(args.epochs):
        total_loss = 0.0
        for batch in dataloader:
            (x0, x1), _ = batch[0]
            z0 = model(x0)
            z1 = model(x1)
            loss = criterion(z0, z1) + clsp_term(z0, model(batch[1]))
            total_loss += loss.item()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        losses.append(total_loss / len(dataloader))
        print(f"epoch: {epoch:>02}, loss: {losses[-1]:.5f}")
    torch.save(backbone.state_dict(), args.out)
    return losses


if __name__ == "__main__":
    main()
