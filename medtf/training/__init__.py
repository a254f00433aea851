"""medtf.training"""
