# Solution to exercise 2 of notebook 02: runs in the notebook's namespace (after its cells).
multi = torch.zeros(1, 8, 8, 8)
multi[:, 2:6, 2:6, 2:6] = 2.0  # a cube of class 2 in background 0
multi = monai.data.MetaTensor(multi, affine=torch.eye(4))
bil = Spacing(pixdim=(0.7, 0.7, 0.7), mode="bilinear")(multi)
near = Spacing(pixdim=(0.7, 0.7, 0.7), mode="nearest")(multi)
print("bilinear voxels rounding to class 1:", int((bil.round() == 1).sum()))
print("nearest values:", torch.unique(near).tolist())
